"""The event's cost ledger: one CSV line per instance the backend terminated, appended, never rewritten.

The organiser reads it without Airflow (a spreadsheet, ``ramp-airflow cost-report``); its path is
:func:`~ramp_airflow.utils.layout.cost_ledger_file`, its billing rule :mod:`~ramp_airflow.utils.billing`.
Each line is appended whole, by one ``os.write`` to the file opened with ``O_APPEND``, under an
exclusive ``flock``: workers sharing the folder never interleave, the first writer writes the header,
and an instance already in the file is not appended again (a retried teardown).
"""

from __future__ import annotations

import csv
import datetime
import errno
import fcntl
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ramp_airflow.utils import billing, ec2_tags
from ramp_airflow.utils.ec2_states import market_of
from ramp_airflow.utils.run_values import given
from ramp_airflow.utils.untrusted_text import clean

COLUMNS = (
    "submission_id",
    "team",
    "submission_name",
    "run_id",
    "launched_by",  # the launch task, e.g. attempt_1.launch_instance
    "terminated_by",  # the task that terminated it: a teardown, the run's sweep, the housekeeping
    "instance_id",
    "instance_type",
    "market",  # EC2's InstanceLifecycle: spot, or on-demand when EC2 gives none
    "launch_time",  # EC2's LaunchTime
    "ready_time",  # when the ready wait saw it ready; empty when it never was, or is not known
    "termination_time",  # when our terminate call was made
    "state_at_termination",  # EC2's state then: anything but running makes billed_seconds an upper bound
    "billed_seconds",
)
# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@")


class LedgerError(ValueError):
    """A ledger file that is not one: a wrong header, or a line without every column."""


def participant_text(text: object) -> str:
    """
    A participant's team or submission name as a ledger cell: on one line, free of control
    characters, and never read as a formula by a spreadsheet (a leading ``'``).
    """
    if text is None:
        return ""
    text = " ".join(clean(str(text)).split())
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")


def ledger_row(
    instance: Mapping,
    *,
    terminated_at: datetime.datetime,
    state_at_termination: str | None,
    terminated_by: str,
    submission: Mapping | None = None,
    ready_at: str | None = None,
) -> dict[str, str]:
    """
    The ledger row of an instance the backend terminated, from EC2's description of it.

    :param instance: EC2's description (``describe_instances``), read before terminating
    :param terminated_at: when the terminate call was made (timezone-aware)
    :param state_at_termination: the instance's state then, as the terminate call reported it
    :param terminated_by: the terminating task's id
    :param submission: the submission as the claim task returned it (``team``, ``name``), when known
    :param ready_at: when the ready wait saw the instance ready (ISO 8601), when known
    """
    tags, submission = ec2_tags.tags_of(instance), submission or {}
    ready_at = given(ready_at)
    return {
        "submission_id": tags.get(ec2_tags.SUBMISSION_ID, ""),
        "team": participant_text(submission.get("team")),
        "submission_name": participant_text(submission.get("name")),
        "run_id": tags.get(ec2_tags.RUN_ID, ""),
        "launched_by": tags.get(ec2_tags.TASK_ID, ""),
        "terminated_by": terminated_by,
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType", ""),
        "market": market_of(instance),
        "launch_time": _stamp(instance["LaunchTime"]),
        "ready_time": _stamp(datetime.datetime.fromisoformat(ready_at)) if ready_at else "",
        "termination_time": _stamp(terminated_at),
        "state_at_termination": state_at_termination or "unknown",
        "billed_seconds": str(billing.billed_seconds(instance["LaunchTime"], terminated_at)),
    }


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def append(path: str, row: Mapping[str, str]) -> bool:
    """
    Append one row to the ledger at ``path``, creating it (header first) when there is none.

    :return: False, writing nothing, when the ledger holds that instance already
    """
    line = _csv_line(row[name] for name in COLUMNS)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", errors="replace")
        if not text:
            line = _csv_line(COLUMNS) + line
        elif row["instance_id"] in _instance_ids(text):
            return False
        elif not text.endswith("\n"):
            line = "\n" + line  # after a line cut short (a full disk), not glued to it
        data = line.encode("utf-8")
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, f"{path}: only part of a ledger line was written")
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def _instance_ids(text: str) -> set[str]:
    column = COLUMNS.index("instance_id")
    return {row[column] for row in csv.reader(io.StringIO(text)) if len(row) == len(COLUMNS)}


def read_rows(path: str) -> list[dict[str, str]]:
    """
    Every row of the ledger at ``path``, as text by column name.

    :raises FileNotFoundError: when there is no ledger (yet)
    :raises LedgerError: naming the line, when a line is not a ledger row
    """
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is not None and tuple(header) != COLUMNS:
            raise LedgerError(f"{path}: line 1 is not the cost ledger's header ({','.join(COLUMNS)})")
        rows = []
        for values in reader:
            row = dict(zip(COLUMNS, values))
            try:
                if len(values) != len(COLUMNS):
                    raise ValueError(f"{len(values)} fields, not {len(COLUMNS)}")
                int(row["billed_seconds"]), datetime.datetime.fromisoformat(row["launch_time"])
            except ValueError as err:
                raise LedgerError(f"{path}: line {reader.line_num} is not a ledger row: {err}") from None
            rows.append(row)
    return rows


def launched_since(rows: Iterable[Mapping[str, str]], since: datetime.datetime) -> list[Mapping[str, str]]:
    """The rows of the instances launched at ``since`` (timezone-aware) or later."""
    return [row for row in rows if datetime.datetime.fromisoformat(row["launch_time"]) >= since]


@dataclass(frozen=True)
class Totals:
    """What a set of ledger rows adds up to."""

    instances: int = 0
    billed_seconds: int = 0
    seconds_by_type: Mapping[str, int] = field(default_factory=dict)

    def cost(self, prices: Mapping[str, float]) -> tuple[float, dict[str, int]]:
        """(the cost of the seconds of the types ``prices`` prices, the seconds by type of the others)."""
        amount, unpriced = 0.0, {}
        for instance_type, seconds in self.seconds_by_type.items():
            value = billing.cost(seconds, instance_type, prices)
            if value is None:
                unpriced[instance_type] = seconds
            else:
                amount += value
        return amount, unpriced


def totals(rows: Iterable[Mapping[str, str]]) -> Totals:
    """The instances and billed seconds of ``rows``, in all and by instance type."""
    instances, by_type = 0, {}
    for row in rows:
        instances += 1
        by_type[row["instance_type"]] = by_type.get(row["instance_type"], 0) + int(row["billed_seconds"])
    return Totals(instances, sum(by_type.values()), by_type)


def event_totals(path: str, since: datetime.datetime | None = None) -> Totals:
    """
    The totals of an event's ledger (:func:`~ramp_airflow.utils.layout.cost_ledger_file`); zero when
    it has none yet.

    :param since: count only the instances launched then or later (timezone-aware)
    :raises LedgerError: when the file is not a ledger
    """
    try:
        rows = read_rows(path)
    except FileNotFoundError:
        return Totals()
    return totals(launched_since(rows, since) if since else rows)
