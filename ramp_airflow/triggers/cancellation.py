"""
What a training run's wait does when an operator cancels it from Airflow: marks the task or its run
failed or successful, or clears it, while the wait runs in the triggerer.

Airflow calls the trigger's ``on_kill`` for those actions only, never when the triggerer stops or
hands the trigger to another triggerer, nor on a timeout: so a cancel ends the training for good,
while a restarted triggerer picks the wait up again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ramp_airflow.utils import ec2_tags
from ramp_airflow.utils.submission_states import CANCELLED_BY_OPERATOR

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger


async def cancel_training(trigger: BaseTrigger, instance_id: str | None, aws: dict[str, Any]) -> None:
    """
    Terminate the instance the trigger's run launched, and record the run's submission as
    ``checking_error``, "cancelled by an operator" (while the run still owns its claim).

    An instance the run did not launch (one given with the run's ``instance_id``, to be left running)
    is left as it is, and so is its submission: the run's teardown and final task decide.

    :param trigger: the cancelled trigger: its ``task_instance`` names the run
    :param instance_id: the instance the wait was about
    :param aws: the trigger's :meth:`~ramp_airflow.utils.aws_credentials.AwsCredentials.reference`
    """
    if not instance_id:
        return
    # The database driver and boto3 block: a thread keeps the triggerer's event loop free. Airflow 3.3
    # cancels on_kill itself at its next look at the triggers to cancel, about a second later; the
    # thread goes on to the end regardless.
    await asyncio.to_thread(_cancel, trigger, instance_id, aws)


def _cancel(trigger: BaseTrigger, instance_id: str, aws: dict[str, Any]) -> None:
    try:
        _end_training(trigger, instance_id, aws)
    except Exception:
        # Nobody awaits the thread by then: its error goes to the log, and the run's teardown and the
        # housekeeping DAG end what is left.
        trigger.log.exception("Ending the cancelled training on instance %s failed", instance_id)


def _end_training(trigger: BaseTrigger, instance_id: str, aws: dict[str, Any]) -> None:
    from ramp_airflow.config import load_config
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook, RunRef, StateTransitionError
    from ramp_airflow.operators.terminations import terminate_recorded
    from ramp_airflow.triggers.ec2 import ec2_hook
    from ramp_airflow.utils.layout import cost_ledger_file

    ti, log = trigger.task_instance, trigger.log
    ec2 = ec2_hook(aws)
    instance = ec2.describe_instance(instance_id)
    tags = ec2_tags.tags_of(instance or {})
    if not instance or not ec2_tags.launched_by(tags, ti.dag_id, ti.run_id):
        log.warning("Cancelled by an operator; instance %s was not launched by this run: left as it is", instance_id)
        return
    config = load_config(aws["config_path"])
    submission_id, owner = int(tags[ec2_tags.SUBMISSION_ID]), RunRef(ti.dag_id, ti.run_id)
    database = RampDatabaseHook(database=config.database)
    submission = None
    try:
        submission = database.get_submission(submission_id)  # its team and name, for the cost ledger
        database.set_checking_error(
            submission_id, f"{CANCELLED_BY_OPERATOR} (its run {ti.run_id} was stopped from Airflow).", owner
        )
    except StateTransitionError as err:
        log.warning("Cancelled by an operator; submission %s is left as it is: %s", submission_id, err)
    finally:
        # Even when the database cannot be reached: billing stops now, and the loop's next look
        # records the submission whose run ended without a result.
        log.warning("Cancelled by an operator: terminating instance %s of submission %s", instance_id, submission_id)
        ledger = cost_ledger_file(config.aws.local_log_folder, config.event_name)
        terminate_recorded(ec2, instance, ledger, ti.task_id, log, submission=submission)
