"""How the tasks terminate an instance: terminated, then recorded in the event's cost ledger."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ramp_airflow.cost_report import run_summary
from ramp_airflow.utils import cost_ledger

if TYPE_CHECKING:
    import logging

    from ramp_airflow.hooks.ec2 import RampEc2Hook


def terminate_recorded(
    hook: RampEc2Hook, instance: dict, ledger_path: str | None, terminated_by: str, log: logging.Logger, **row_facts
) -> None:
    """
    Terminate an instance, then append its row to the cost ledger, if there is one.

    A ledger that cannot be written never fails the termination: the error and the row are logged.

    :param hook: the EC2 hook to terminate with
    :param instance: EC2's description of the instance, read before
    :param ledger_path: the event's cost ledger (None: no record)
    :param terminated_by: the terminating task's id
    :param log: where to say what happened
    :param row_facts: ``submission`` and ``ready_at``, when known (see :func:`cost_ledger.ledger_row`)
    """
    terminated_at = datetime.datetime.now(datetime.timezone.utc)
    state = hook.terminate_instance(instance["InstanceId"])
    if not ledger_path:
        return
    row = cost_ledger.ledger_row(
        instance, terminated_at=terminated_at, state_at_termination=state, terminated_by=terminated_by, **row_facts
    )
    try:
        if not cost_ledger.append(ledger_path, row):
            log.info("Instance %s is in the cost ledger already", instance["InstanceId"])
    except OSError as err:
        log.error("Could not write to the cost ledger %s (%s); its row: %s", ledger_path, err, row)


def log_run_cost(log: logging.Logger, ledger_path: str, run_id: str, submission: Any, outcome: str | None) -> None:
    """
    Log one line on what the run ``run_id`` cost, from the ledger rows of its instances.

    In the task log, since Airflow 3.3 lets no task set its run's note (only the REST API, with a
    user's token, can).
    """
    try:
        rows = [row for row in cost_ledger.read_rows(ledger_path) if row["run_id"] == run_id]
    except FileNotFoundError:
        rows = []
    except (OSError, cost_ledger.LedgerError) as err:
        log.error("Cannot read the cost ledger: %s", err)
        return
    log.info("%s", run_summary(rows, submission, outcome))
