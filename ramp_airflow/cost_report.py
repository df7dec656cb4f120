"""What the cost ledger says, as text: the ``ramp-airflow cost-report`` table and a training run's summary."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from ramp_airflow.utils import cost_ledger
from ramp_airflow.utils.cost_ledger import participant_text

UNKNOWN = "(unknown)"
# The columns that name a table row, per grouping.
KEY_COLUMNS = {"team": ("TEAM",), "submission": ("SUBMISSION", "TEAM", "NAME")}
FIGURE_COLUMNS = ("RUNS", "INSTANCES", "BILLED S", "HOURS")


def report_lines(
    rows: Sequence[Mapping[str, str]],
    by: str = "team",
    prices: Mapping[str, float] | None = None,
    since: datetime.datetime | None = None,
) -> list[str]:
    """
    The cost report: one line per team or submission (the costliest first), then the totals.

    A row without a team (terminated by the housekeeping, which does not know it) takes the team and
    name another row of its submission has.

    :param rows: ledger rows (:func:`~ramp_airflow.utils.cost_ledger.read_rows`)
    :param by: ``team`` or ``submission``
    :param prices: ``aws.instance_price_per_hour``; None: no COST column. Seconds of a type it does
        not price are left out of the cost, which is then marked ``*`` and explained below the table.
    :param since: only the instances launched then or later (timezone-aware)
    """
    known = {row["submission_id"]: (row["team"], row["submission_name"]) for row in rows if row["team"]}
    rows = cost_ledger.launched_since(rows, since) if since else rows
    groups: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
    for row in rows:
        team, name = known.get(row["submission_id"], (UNKNOWN, UNKNOWN))
        key = (team,) if by == "team" else (row["submission_id"] or UNKNOWN, team, name)
        groups.setdefault(key, []).append(row)
    ordered = sorted(groups.items(), key=lambda item: (-cost_ledger.totals(item[1]).billed_seconds, item[0]))
    keys = KEY_COLUMNS[by]
    header = [*keys, *FIGURE_COLUMNS, *(["COST"] if prices is not None else [])]
    table = [header, *([*key, *_figures(group, prices)] for key, group in ordered)]
    table.append(["TOTAL", *[""] * (len(keys) - 1), *_figures(rows, prices)])
    lines = _aligned(table, len(keys))
    if prices is not None:
        _, unpriced = cost_ledger.totals(rows).cost(prices)
        if unpriced:
            missing = ", ".join(f"{kind or UNKNOWN} ({seconds} s)" for kind, seconds in sorted(unpriced.items()))
            lines.append(f"* leaves out the types aws.instance_price_per_hour gives no price for: {missing}")
    return lines


def _figures(rows: Sequence[Mapping[str, str]], prices: Mapping[str, float] | None) -> list[str]:
    totals = cost_ledger.totals(rows)
    figures = [
        str(len({row["run_id"] for row in rows})),
        str(totals.instances),
        str(totals.billed_seconds),
        f"{totals.billed_seconds / 3600:.3f}",
    ]
    if prices is not None:
        amount, unpriced = totals.cost(prices)
        figures.append(f"{amount:.4f}{'*' if unpriced else ' '}")  # the digits stay aligned
    return figures


def _aligned(table: list[list[str]], text_columns: int) -> list[str]:
    """The table's lines: the first ``text_columns`` columns aligned left, the figures right."""
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    return [
        "  ".join(
            cell.ljust(width) if column < text_columns else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))
        )
        for line in table
    ]


def run_summary(rows: Sequence[Mapping[str, str]], submission: Mapping | None, outcome: str | None) -> str:
    """
    One line on what a training run cost: its submission, its outcome, its instances and their seconds.

    :param rows: the ledger rows of the run
    :param submission: the submission as the claim task returned it; None when nothing was claimed
    :param outcome: the state recorded for the submission; None when none was
    """
    if submission:
        who = (
            f"submission {submission.get('id')} ({participant_text(submission.get('name'))!r} "
            f"of team {participant_text(submission.get('team'))!r})"
        )
    else:
        who = "no submission claimed"
    instances = ", ".join(
        f"{row['instance_id']} ({row['instance_type']}, {row['market']}, {row['billed_seconds']} s)" for row in rows
    )
    total = cost_ledger.totals(rows).billed_seconds
    return (
        f"Cost of this run: {who}, {outcome or 'no result recorded'}: "
        f"{instances or 'no instance terminated'}; {total} s billed in all"
    )
