"""
The per-event training DAG: one run trains one submission, one task per step.

claim_submission -> [attempt: launch_instance -> wait_for_instance -> upload_and_train ->
wait_for_training -> fetch_results, with mark_training beside the upload and terminate_instance as
the attempt's teardown] -> record_results -> the event's commands -> ensure_final_state; and, whatever
happened, terminate_leftover_instances.

An attempt whose instance is lost while it boots or trains is skipped and followed by another on a new
instance, up to ``instance_retries`` times; the last attempt's loss is recorded as a platform
failure. The two waits start in the triggerer and end there, so a wait holds no worker slot and
costs no task start; run by ``dag.test()`` (``ramp_aws_train``), they defer from the worker instead.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule

from ramp_airflow.config import EventConfig
from ramp_airflow.dag_factory import bounds
from ramp_airflow.dag_factory.arguments import aws_credentials, dag_arguments, database_arguments, instance_login
from ramp_airflow.dag_factory.run_form import add_run_form
from ramp_airflow.operators.ec2 import LaunchInstanceOperator
from ramp_airflow.operators.event_commands import RunEventCommandsOperator
from ramp_airflow.operators.ramp_database import (
    ClaimSubmissionOperator,
    FinalizeSubmissionOperator,
    MarkTrainingOperator,
    RecordResultsOperator,
)
from ramp_airflow.operators.terminations import TerminateInstanceOperator, TerminateRunInstancesOperator
from ramp_airflow.operators.training import FetchResultsOperator, RsyncTrainOperator
from ramp_airflow.sensors.instance import InstanceReadySensor, TrainingFinishedSensor
from ramp_airflow.utils.dag_ids import training_dag_id
from ramp_airflow.utils.ec2_lifecycle import READY_AT
from ramp_airflow.utils.layout import cost_ledger_file
from ramp_airflow.utils.submission_states import SCORED, TRAINING_ERROR

CLAIM = "claim_submission"
LAUNCH = "launch_instance"
WAIT_FOR_INSTANCE = "wait_for_instance"
UPLOAD_AND_TRAIN = "upload_and_train"
WAIT_FOR_TRAINING = "wait_for_training"
FETCH = "fetch_results"
SUBMISSION = f"ti.xcom_pull(task_ids='{CLAIM}')"


def _xcom(task_id: str, key: str = "") -> str:
    """
    A template of a task's XCom; kept a string, since the waits render theirs in the triggerer, which
    serves only the pull of one map index (the tasks are not mapped: -1).
    """
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}', map_indexes=-1){key} }}}}"


def _ready_at(group: str) -> str:
    """A template of when an attempt's ready wait saw its instance ready (None when it never did)."""
    return f"{{{{ ti.xcom_pull(task_ids='{group}.{WAIT_FOR_INSTANCE}', key='{READY_AT}') }}}}"


def training_attempt(ti, attempts: int) -> dict[str, Any]:
    """
    The training outcome and fetched results of the last attempt that got as far as an outcome.

    Registered as a DAG macro so that the recording task can template from it.
    """
    for number in range(attempts, 0, -1):
        outcome = ti.xcom_pull(task_ids=f"attempt_{number}.{WAIT_FOR_TRAINING}")
        if outcome:
            return {"outcome": outcome, "result": ti.xcom_pull(task_ids=f"attempt_{number}.{FETCH}")}
    raise LookupError("no training attempt of this run reached an outcome")


def build_training_dag(config: EventConfig) -> DAG:
    """Build ``ramp_train_<event>`` from an event config."""
    aws = config.aws
    attempts = aws.instance_retries + 1
    db, credentials, login = database_arguments(config), aws_credentials(config), instance_login(config)
    submission_id = _xcom(CLAIM, "['id']")
    download_secs = bounds.download_secs(aws.max_output_mb)
    ledger = cost_ledger_file(aws.local_log_folder, config.event_name)

    with DAG(
        dag_id=training_dag_id(config.event_name),
        description=f"Train one submission of RAMP event {config.event_name} on an EC2 instance",
        schedule=None,
        max_active_runs=aws.max_concurrent_instances,
        # When worker slots are short, a task further along a submission's path goes first: an
        # instance that trained waits for its fetch and termination, billed, while a new claim costs nothing.
        default_args={"weight_rule": "upstream", **bounds.RETRIES},
        # It only ever runs when triggered (by a person or the loop), so it starts unpaused.
        is_paused_upon_creation=False,
        render_template_as_native_obj=True,
        user_defined_macros={"training_attempt": training_attempt},
        **dag_arguments(config, __doc__),
    ) as dag:
        claim = ClaimSubmissionOperator(task_id=CLAIM, execution_timeout=bounds.DATABASE_STEP, **db)
        # It follows whichever attempt got that far; the other attempts' tasks are skipped.
        record = RecordResultsOperator(
            task_id="record_results",
            submission_id=submission_id,
            outcome=f"{{{{ training_attempt(ti, {attempts})['outcome'] }}}}",
            result=f"{{{{ training_attempt(ti, {attempts})['result'] }}}}",
            lost_message=f"The EC2 instance was lost during training {attempts} time(s) (terminated or reclaimed).",
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            execution_timeout=bounds.DATABASE_STEP,
            **db,
        )
        previous, teardowns, ready_times = claim, [], {}
        for number in range(1, attempts + 1):
            group = f"attempt_{number}"
            instance_id, address = _xcom(f"{group}.{LAUNCH}"), _xcom(f"{group}.{WAIT_FOR_INSTANCE}")
            # Which instance, and which submission on it: the same for the three tasks that reach it.
            on_instance = {"submission_id": submission_id, "address": address, "login": login}
            host_key = _xcom(f"{group}.{UPLOAD_AND_TRAIN}", "['host_key']")
            with TaskGroup(group, tooltip=f"Training attempt {number} of {attempts}"):
                launch = LaunchInstanceOperator(
                    task_id=LAUNCH,
                    # A later attempt runs only when the one before lost its instance (and skipped).
                    trigger_rule=TriggerRule.ALL_SUCCESS if number == 1 else TriggerRule.ALL_SKIPPED,
                    submission_id=submission_id,
                    instance_type=aws.instance_type,
                    key_name=aws.key_name,
                    security_group=aws.security_group,
                    ami_image_id=aws.ami_image_id,
                    ami_image_name=aws.ami_image_name,
                    ami_owners=aws.ami_owners,
                    use_spot_instance=aws.use_spot_instance,
                    spot_wait_secs=aws.spot_wait_secs,
                    existing_instance_id=_xcom(CLAIM, "['instance_id']"),
                    max_lifetime_secs=bounds.instance_lifetime_secs(aws),
                    aws_credentials=credentials,
                    execution_timeout=bounds.seconds(aws.spot_wait_secs) + bounds.EC2_CALLS,
                    # It launches only while this run owns the claim.
                    **db,
                )
                ready = InstanceReadySensor(
                    task_id=WAIT_FOR_INSTANCE,
                    instance_id=instance_id,
                    aws_credentials=credentials,
                    config_path=config.path,
                    poke_interval=aws.check_status_interval_secs,
                    timeout=aws.instance_ready_timeout_secs,
                    # An instance gone while it boots (a reclaimed spot instance) is replaced too.
                    skip_when_lost=number < attempts,
                    # Its failures stay: the instance is gone, or was not ready in its time (a retry
                    # would wait that long again). The trigger itself rides out EC2's hiccups.
                    retries=0,
                )
                train = RsyncTrainOperator(
                    task_id=UPLOAD_AND_TRAIN,
                    **on_instance,
                    ramp_submissions_path=_xcom(CLAIM, "['path_ramp_submissions']"),
                    training_command=aws.training_command,
                    memory_profiling=aws.memory_profiling,
                    instance_id=instance_id,
                    aws_credentials=credentials,
                    skip_when_lost=number < attempts,
                    max_upload_secs=bounds.UPLOAD_SECS,
                    # The upload, then the start command and its EC2 check.
                    execution_timeout=bounds.seconds(bounds.UPLOAD_SECS) + bounds.EC2_CALLS,
                )
                finished = TrainingFinishedSensor(
                    task_id=WAIT_FOR_TRAINING,
                    **on_instance,
                    host_key=host_key,
                    instance_id=instance_id,
                    aws_credentials=credentials,
                    config_path=config.path,
                    poke_interval=aws.check_finished_training_interval_secs,
                    training_timeout_secs=aws.training_timeout_secs,
                    training_started_at=_xcom(f"{group}.{UPLOAD_AND_TRAIN}", "['training_started_at']"),
                    # A backstop in case the triggerer itself stalls: the trigger keeps the time limit.
                    timeout=aws.training_timeout_secs + bounds.TRAINING_WAIT_MARGIN_SECS,
                    skip_when_lost=number < attempts,
                )
                fetch = FetchResultsOperator(
                    task_id=FETCH,
                    **on_instance,
                    host_key=host_key,
                    local_predictions_folder=aws.local_predictions_folder,
                    local_log_folder=aws.local_log_folder,
                    expected_folds=_xcom(CLAIM, "['n_folds']"),
                    max_output_bytes=int(aws.max_output_mb * (1 << 20)),
                    max_download_secs=download_secs,
                    training_outcome=_xcom(f"{group}.{WAIT_FOR_TRAINING}"),
                    # The download, then reading and parsing what came (bounded in size).
                    execution_timeout=bounds.seconds(download_secs) + bounds.EC2_CALLS,
                )
                # Beside the upload, not before it: the database is updated while the upload runs.
                mark_training = MarkTrainingOperator(
                    task_id="mark_training",
                    submission_id=submission_id,
                    execution_timeout=bounds.DATABASE_STEP,
                    **db,
                )
                terminate = TerminateInstanceOperator(
                    task_id="terminate_instance",
                    instance_id=instance_id,
                    aws_credentials=credentials,
                    ledger_path=ledger,
                    submission=f"{{{{ {SUBMISSION} }}}}",
                    ready_at=_ready_at(group),
                    execution_timeout=bounds.EC2_CALLS,
                )
                previous >> launch >> ready >> [train, mark_training]
                train >> finished >> fetch
                fetch >> terminate.as_teardown(setups=launch, on_failure_fail_dagrun=True)
                if "start_training" in config.event_commands and number == 1:
                    mark_training >> _event_commands_task(config, "start_training", None)
            # Recording waits for the mark too, so that a quick training is never marked after it.
            [mark_training, fetch] >> record
            teardowns.append(terminate)
            ready_times[launch.task_id] = _ready_at(group)
            previous = fetch

        for moment, state in (("successful_training", SCORED), ("failed_training", TRAINING_ERROR)):
            if moment in config.event_commands:
                record >> _event_commands_task(config, moment, state, recorded_state=record.output)
        ensure_final = FinalizeSubmissionOperator(
            task_id="ensure_final_state",
            submission=f"{{{{ {SUBMISSION} }}}}",
            message="The training run ended without a result (a failure on the platform's side); see its task logs.",
            trigger_rule=TriggerRule.ALL_DONE,
            execution_timeout=bounds.DATABASE_STEP,
            **db,
        )
        record >> ensure_final
        # Last, it logs what the run cost: the ledger rows of all its instances.
        leftovers = TerminateRunInstancesOperator(
            task_id="terminate_leftover_instances",
            aws_credentials=credentials,
            ledger_path=ledger,
            submission=f"{{{{ {SUBMISSION} }}}}",
            outcome=f"{{{{ ti.xcom_pull(task_ids='{record.task_id}') }}}}",
            ready_times=ready_times,
            trigger_rule=TriggerRule.ALL_DONE,
            execution_timeout=bounds.EC2_CALLS,
        )
        [*teardowns, record] >> leftovers
    return add_run_form(dag)


def _event_commands_task(config: EventConfig, moment: str, only_if_state: str | None, recorded_state: Any = None):
    # The task id keeps the seed's word: organisers know these as the event's hooks.
    return RunEventCommandsOperator(
        task_id=f"hook_{moment}",
        moment=moment,
        commands=config.event_commands[moment],
        submission=f"{{{{ {SUBMISSION} }}}}",
        local_log_folder=config.aws.local_log_folder,
        only_if_state=only_if_state,
        recorded_state=recorded_state,
        # The organiser's own commands: trusted, but a hung one must not hold the run forever.
        execution_timeout=bounds.EVENT_COMMANDS,
        # The organiser's commands may not be safe to run twice (a notification, a mail).
        retries=0,
    )
