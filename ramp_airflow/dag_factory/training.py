"""
The per-event training DAG: one run trains one submission.

claim -> [attempt: launch and wait until ready -> upload, train, wait for the end and fetch
(beside it: mark training)] -> record -> hooks, with every attempt's instance terminated as a
teardown whatever failed before it. An attempt whose instance is lost during training is skipped and
followed by another on a new instance, up to ``instance_retries`` times; the last attempt's
loss is recorded as a platform failure.

Each step that waits (the boot, the training) is one deferrable task that does the work around
its wait itself: every task start costs seconds of scheduling, and the ones between launch and
termination are billed.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule

from ramp_airflow.config import EventConfig
from ramp_airflow.dag_factory.arguments import aws_arguments, database_arguments, ssh_arguments
from ramp_airflow.dag_factory.run_form import add_run_form
from ramp_airflow.operators.ec2 import LaunchInstanceOperator, TerminateInstanceOperator
from ramp_airflow.operators.event_hook import RunEventHookOperator
from ramp_airflow.operators.ramp_database import (
    ClaimSubmissionOperator,
    FinalizeSubmissionOperator,
    MarkTrainingOperator,
    RecordResultsOperator,
)
from ramp_airflow.operators.train import RsyncTrainOperator
from ramp_airflow.utils.submission_states import SCORED, TRAINING_ERROR

CLAIM = "claim_submission"
TRAIN = "upload_and_train"
# Airflow 3.3.2 can fail a deferred task whose trigger fires before the scheduler has recorded
# the deferral (apache/airflow#72716); waiting again is harmless, so the deferring tasks retry, and
# a retry whose wait is already over ends without deferring.
DEFERRAL_RETRIES = {"retries": 2, "retry_delay": datetime.timedelta(seconds=5)}
SUBMISSION = f"ti.xcom_pull(task_ids='{CLAIM}')"


def training_dag_id(event_name: str) -> str:
    return f"ramp_train_{event_name}"


def training_attempt(ti, attempts: int) -> dict[str, Any]:
    """
    The outcome and fetched results of the last attempt that got as far as a training outcome.

    Registered as a DAG macro so that the recording task can template from it.
    """
    for number in range(attempts, 0, -1):
        outcome = ti.xcom_pull(task_ids=f"attempt_{number}.{TRAIN}")
        if outcome:
            outcome = dict(outcome)
            return {"result": outcome.pop("result", None), "outcome": outcome}
    raise LookupError("no training attempt of this run reached an outcome")


def build_training_dag(config: EventConfig) -> DAG:
    """Build ``ramp_train_<event>`` from an event config."""
    aws = config.aws
    attempts = aws.instance_retries + 1
    db, aws_kwargs, ssh_kwargs = database_arguments(config), aws_arguments(config), ssh_arguments(config)
    submission_id = f"{{{{ {SUBMISSION}['id'] }}}}"

    with DAG(
        dag_id=training_dag_id(config.event_name),
        description=f"Train one submission of RAMP event {config.event_name} on an EC2 instance",
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        catchup=False,
        max_active_runs=aws.max_concurrent_instances,
        # It only ever runs when triggered (by a person or the loop), so it starts unpaused.
        is_paused_upon_creation=False,
        render_template_as_native_obj=True,
        user_defined_macros={"training_attempt": training_attempt},
        tags=["ramp", config.event_name],
        doc_md=__doc__,
    ) as dag:
        claim = ClaimSubmissionOperator(task_id=CLAIM, **db)
        # It follows whichever attempt got that far; the other attempts' tasks are skipped.
        record = RecordResultsOperator(
            task_id="record_results",
            submission_id=submission_id,
            outcome=f"{{{{ training_attempt(ti, {attempts})['outcome'] }}}}",
            result=f"{{{{ training_attempt(ti, {attempts})['result'] }}}}",
            lost_message=f"The EC2 instance was lost during training {attempts} time(s) (terminated or reclaimed).",
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            **db,
        )
        previous = claim
        for number in range(1, attempts + 1):
            group = f"attempt_{number}"
            with TaskGroup(group, tooltip=f"Training attempt {number} of {attempts}"):
                launch = LaunchInstanceOperator(
                    task_id="launch_instance",
                    **DEFERRAL_RETRIES,
                    # A later attempt runs only when the one before lost its instance (and skipped).
                    trigger_rule=TriggerRule.ALL_SUCCESS if number == 1 else TriggerRule.ALL_SKIPPED,
                    submission_id=submission_id,
                    event_name=config.event_name,
                    instance_type=aws.instance_type,
                    key_name=aws.key_name,
                    security_group=aws.security_group,
                    ami_image_id=aws.ami_image_id,
                    ami_image_name=aws.ami_image_name,
                    ami_owners=aws.ami_owners,
                    use_spot_instance=aws.use_spot_instance,
                    spot_wait_secs=aws.spot_wait_secs,
                    existing_instance_id=f"{{{{ {SUBMISSION}['instance_id'] }}}}",
                    wait_for_ready=True,
                    check_interval=aws.check_status_interval_secs,
                    ready_timeout=aws.instance_ready_timeout_secs,
                    **aws_kwargs,
                )
                address = f"{{{{ ti.xcom_pull(task_ids='{group}.launch_instance', key='address') }}}}"
                train = RsyncTrainOperator(
                    task_id=TRAIN,
                    **DEFERRAL_RETRIES,
                    submission_id=submission_id,
                    address=address,
                    ramp_submissions_path=f"{{{{ {SUBMISSION}['path_ramp_submissions'] }}}}",
                    training_command=aws.training_command,
                    memory_profiling=aws.memory_profiling,
                    wait_for_completion=True,
                    poll_interval=aws.check_finished_training_interval_secs,
                    training_timeout_secs=aws.training_timeout_secs,
                    instance_id=launch.output,
                    aws_params=aws_kwargs,
                    local_predictions_folder=aws.local_predictions_folder,
                    local_log_folder=aws.local_log_folder,
                    expected_folds=f"{{{{ {SUBMISSION}['n_folds'] }}}}",
                    skip_when_lost=number < attempts,
                    **ssh_kwargs,
                )
                # Beside the training, not before it: the database is updated while the upload runs.
                mark_training = MarkTrainingOperator(task_id="mark_training", submission_id=submission_id, **db)
                terminate = TerminateInstanceOperator(
                    task_id="terminate_instance", instance_id=launch.output, **aws_kwargs
                )
                previous >> launch >> [train, mark_training]
                train >> terminate.as_teardown(setups=launch, on_failure_fail_dagrun=True)
                if "start_training" in config.hooks and number == 1:
                    mark_training >> _hook_task(config, "start_training", None)
            # Recording waits for the mark too, so that a quick training is never marked after it.
            [mark_training, train] >> record
            previous = train

        for hook_name, state in (("successful_training", SCORED), ("failed_training", TRAINING_ERROR)):
            if hook_name in config.hooks:
                record >> _hook_task(config, hook_name, state, recorded_state=record.output)
        ensure_final = FinalizeSubmissionOperator(
            task_id="ensure_final_state",
            submission=f"{{{{ {SUBMISSION} }}}}",
            message="The training run ended without a result (a failure on the platform's side); see its task logs.",
            trigger_rule=TriggerRule.ALL_DONE,
            **db,
        )
        record >> ensure_final
    return add_run_form(dag)


def _hook_task(config: EventConfig, hook_name: str, only_if_state: str | None, recorded_state: Any = None):
    return RunEventHookOperator(
        task_id=f"hook_{hook_name}",
        hook_name=hook_name,
        commands=config.hooks[hook_name],
        submission=f"{{{{ {SUBMISSION} }}}}",
        local_log_folder=config.aws.local_log_folder,
        only_if_state=only_if_state,
        recorded_state=recorded_state,
    )
