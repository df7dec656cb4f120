"""
When a running ``ramp_aws_train_loop`` looked at the RAMP database for new submissions, read from the
trigger logs of its wait (``wait_for_new_submissions``) in the Airflow home it was given.

A submission arrives at a random moment of the loop's interval, so on average it waits half an
interval for the next look. A benchmark that lets each case's submissions arrive when the previous
case ends puts them at whatever moment that lands on, the same from run to run; these helpers make
them arrive halfway between two looks instead, and measure the wait each case actually had.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from ramp_airflow.utils.dag_ids import loop_dag_id

# The trigger's line for a look that found nothing, and Airflow's for the look that found something.
_LOOK_EVENTS = ("No new submission for event", "Trigger fired event")


def loop_looks(airflow_home: Path, event_name: str) -> list[float]:
    """The epoch times of the loop's looks so far, sorted (none before its first wait reached the triggerer)."""
    runs = airflow_home / "logs" / f"dag_id={loop_dag_id(event_name)}"
    looks = []
    for log in runs.glob("run_id=*/task_id=wait_for_new_submissions/attempt=*.log.trigger.*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if str(record.get("event", "")).startswith(_LOOK_EVENTS):
                looks.append(datetime.datetime.fromisoformat(record["timestamp"]).timestamp())
    return sorted(looks)


def halfway_between_looks(looks: list[float], interval: float, now: float, margin: float = 0.5) -> float | None:
    """
    The first moment at least ``margin`` s after ``now`` that falls halfway between two of the loop's
    looks, counting on it to look every ``interval`` s from its last one; None without a look yet.
    """
    if not looks:
        return None
    moment = looks[-1] + interval / 2
    while moment < now + margin:
        moment += interval
    return moment


def wait_for_look(looks: list[float], arrived: float) -> float | None:
    """Seconds from ``arrived`` to the loop's first look after it (None when none is logged)."""
    return next((look - arrived for look in looks if look >= arrived), None)
