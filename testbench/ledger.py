"""Rows of an event's cost ledger, written as the terminating tasks write them."""

from __future__ import annotations

import datetime

from ramp_airflow.utils import cost_ledger
from ramp_airflow.utils.layout import cost_ledger_file

LAUNCHED = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.timezone.utc)


def bill(config, instance_type: str, seconds: int, instance_id: str) -> None:
    """A ledger row for an instance of ``instance_type`` that ran ``seconds``."""
    instance = {"InstanceId": instance_id, "InstanceType": instance_type, "LaunchTime": LAUNCHED, "Tags": []}
    row = cost_ledger.ledger_row(
        instance,
        terminated_at=LAUNCHED + datetime.timedelta(seconds=seconds),
        state_at_termination="running",
        terminated_by="attempt_1.terminate_instance",
    )
    assert cost_ledger.append(cost_ledger_file(config.aws.local_log_folder, config.event_name), row)
