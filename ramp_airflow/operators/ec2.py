"""Tasks that launch, terminate and sweep the instances training RAMP submissions."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ramp_airflow.operators.terminations import log_run_cost, terminate_recorded
from ramp_airflow.utils import ec2_lifecycle, ec2_tags
from ramp_airflow.utils.aws_credentials import DEFAULT_CREDENTIALS, AwsCredentials
from ramp_airflow.utils.ec2_states import USABLE_STATES
from ramp_airflow.utils.run_states import RUN_STATE_ERRORS, dag_run_state
from ramp_airflow.utils.run_values import given, submission_id_of

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.config import DatabaseSettings
    from ramp_airflow.hooks.ec2 import RampEc2Hook


class _Ec2Operator(BaseOperator):
    """
    Base of the tasks that work on the event's instances through :class:`~ramp_airflow.hooks.ec2.RampEc2Hook`.

    :param aws_credentials: how to reach EC2 (the config's ``aws`` section)
    :param ledger_path: the event's cost ledger, where each instance it terminates is recorded (None: nowhere)
    """

    def __init__(
        self, *, aws_credentials: AwsCredentials = DEFAULT_CREDENTIALS, ledger_path: str | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.aws_credentials = aws_credentials
        self.ledger_path = ledger_path

    @cached_property
    def hook(self) -> RampEc2Hook:
        # Imported here: DAG files import the operators at every parse, and boto3 is slow to load.
        from ramp_airflow.hooks.ec2 import RampEc2Hook

        return RampEc2Hook(**self.aws_credentials.hook_kwargs())

    def _terminate(self, instance: dict, **row_facts) -> None:
        terminate_recorded(self.hook, instance, self.ledger_path, self.task_id, self.log, **row_facts)


class LaunchInstanceOperator(_Ec2Operator):
    """
    Launch the instance that trains one submission, tagged with this run; push its id.

    A retry of the task gets back the instance its first try launched; if the launch fails
    (a timeout, a kill) after EC2 created the instance, the task terminates it. With
    ``existing_instance_id`` nothing is launched: that instance is checked and its id pushed.

    It does not wait for the instance to boot: :class:`~ramp_airflow.sensors.instance.InstanceReadySensor` does.

    :param submission_id: the RAMP submission to train (templated)
    :param event_name: the RAMP event (``ramp.event_name``)
    :param instance_type: ``aws.instance_type``
    :param key_name: ``aws.key_name``
    :param security_group: ``aws.security_group`` (a name, or an ``sg-`` id)
    :param ami_image_id: ``aws.ami_image_id``
    :param ami_image_name: ``aws.ami_image_name`` (the newest image of that name among ``ami_owners``)
    :param ami_owners: ``aws.ami_owners``
    :param use_spot_instance: ``aws.use_spot_instance``
    :param spot_wait_secs: ``aws.spot_wait_secs``: how long to try spot before launching on demand
    :param existing_instance_id: train on this instance instead (templated); it is left running
    :param max_lifetime_secs: a launched instance powers itself off, and so is terminated, after
        this long, even if Airflow is gone (None: no such failsafe)
    :param postgres_conn_id: with ``database``, how to reach the RAMP database (as its operators do).
        When either is given, nothing is launched unless this run still owns the submission's claim, so
        that a submission re-queued or moved by an organiser costs no instance.
    :param database: the config's ``sqlalchemy`` section
    """

    template_fields: Sequence[str] = ("submission_id", "existing_instance_id")
    ui_color = "#f9c915"

    def __init__(
        self,
        *,
        submission_id: int | str,
        event_name: str,
        instance_type: str,
        key_name: str,
        security_group: str,
        ami_image_id: str | None = None,
        ami_image_name: str | None = None,
        ami_owners: Sequence[str] = ("self",),
        use_spot_instance: bool = False,
        spot_wait_secs: float = 120,
        existing_instance_id: str | None = None,
        max_lifetime_secs: float | None = None,
        postgres_conn_id: str | None = None,
        database: DatabaseSettings | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.submission_id = submission_id
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.max_lifetime_secs = max_lifetime_secs
        self.event_name = event_name
        self.instance_type = instance_type
        self.key_name = key_name
        self.security_group = security_group
        self.ami_image_id = ami_image_id
        self.ami_image_name = ami_image_name
        self.ami_owners = tuple(ami_owners)
        self.use_spot_instance = use_spot_instance
        self.spot_wait_secs = spot_wait_secs
        self.existing_instance_id = existing_instance_id

    def execute(self, context: Context) -> str:
        try:
            submission_id = submission_id_of(self.submission_id)
        except ValueError as err:
            raise AirflowFailException(str(err)) from None
        self._check_claim(submission_id, context["run_id"])
        return self._existing_instance() or self._launch(submission_id, context["run_id"])

    def _check_claim(self, submission_id: int, run_id: str) -> None:
        if self.postgres_conn_id is None and self.database is None:
            return
        from ramp_airflow.hooks.ramp_database import ClaimLost, RampDatabaseHook, RunRef

        hook = RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=self.database)
        try:
            hook.check_claim(submission_id, RunRef(self.dag_id, run_id))
        except ClaimLost as err:
            raise AirflowFailException(f"No instance launched: {err}") from None

    def _existing_instance(self) -> str | None:
        existing_id = given(self.existing_instance_id)
        if existing_id:
            instance = self.hook.describe_instance(existing_id)
            state = instance["State"]["Name"] if instance else "unknown to EC2"
            if state not in USABLE_STATES:
                raise AirflowFailException(
                    f"The existing instance {existing_id} cannot train ({state}): "
                    "give the id of a running instance, or none to launch one."
                )
            self.log.info("Training on the existing instance %s (%s); it will be left running", existing_id, state)
        return existing_id

    def _launch(self, submission_id: int, run_id: str) -> str:
        image_id = self.hook.resolve_image(self.ami_image_id, self.ami_image_name, self.ami_owners)
        launch = dict(submission_id=submission_id, dag_id=self.dag_id, run_id=run_id, task_id=self.task_id)
        try:
            return self.hook.launch_instance(
                image_id=image_id,
                instance_type=self.instance_type,
                key_name=self.key_name,
                security_group=self.security_group,
                event_name=self.event_name,
                use_spot_instance=self.use_spot_instance,
                spot_wait_secs=self.spot_wait_secs,
                max_lifetime_secs=self.max_lifetime_secs,
                **launch,
            )
        except BaseException:
            # A teardown does not run when its setup failed: a failed launch (a timeout, a kill
            # right after EC2 answered) must itself terminate what it created.
            self._terminate_launched(launch)
            raise

    def _terminate_launched(self, launch: dict) -> None:
        try:
            for instance in self.hook.find_launched_instances(**launch):
                self.log.warning("The launch failed: terminating instance %s, which it created", instance["InstanceId"])
                self.hook.terminate_instance(instance["InstanceId"])
        except Exception:
            # The launch's own error is the one to report; the sweep catches what is left.
            self.log.exception("Could not look for instances of the failed launch; the orphan sweep will")


class TerminateInstanceOperator(_Ec2Operator):
    """
    Terminate the instance this run launched; meant as the run's teardown task.

    An instance not launched by this DAG run (an existing instance) is left running; one
    already gone, or no instance id (the launch created none), is a success.

    :param instance_id: the instance to terminate (templated), usually the launch task's XCom
    :param submission: the submission as the claim task returned it (templated), for the cost ledger
    :param ready_at: when the ready wait saw the instance ready (templated), for the cost ledger
    """

    template_fields: Sequence[str] = ("instance_id", "submission", "ready_at")
    ui_color = "#e8a0a0"

    def __init__(self, *, instance_id: str | None, submission: Any = None, ready_at: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.instance_id = instance_id
        self.submission = submission
        self.ready_at = ready_at

    def execute(self, context: Context) -> None:
        instance_id = given(self.instance_id)
        instance = self.hook.describe_instance(instance_id) if instance_id else None
        if instance_id is None:
            self.log.info("No instance to terminate: the launch did not create one")
        elif instance is None:
            self.log.info("Instance %s is already gone", instance_id)
        elif not ec2_tags.launched_by(ec2_tags.tags_of(instance), self.dag_id, context["run_id"]):
            self.log.info("Leaving instance %s running: this run did not launch it", instance_id)
        else:
            self._terminate(instance, submission=given(self.submission), ready_at=self.ready_at)


class TerminateRunInstancesOperator(_Ec2Operator):
    """
    Terminate every instance this run launched that is still alive: the run's last safety net.

    The attempts' teardowns terminate their instances; a teardown does not run when its launch
    failed, though, and a launch task killed after EC2 created the instance, with no retry left,
    leaves one that only the tags know of. This task finds those by the run's tags.

    With a ledger, it then logs one line on what the run cost (Airflow 3.3 gives a task no way to set
    its run's note).

    :param submission: the submission as the claim task returned it (templated)
    :param outcome: the state recorded for it (templated)
    :param ready_times: when the ready waits saw their instances ready (templated), by launch task id
    """

    template_fields: Sequence[str] = ("submission", "outcome", "ready_times")
    ui_color = "#e8a0a0"

    def __init__(
        self, *, submission: Any = None, outcome: Any = None, ready_times: dict | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.submission = submission
        self.outcome = outcome
        self.ready_times = ready_times or {}

    def execute(self, context: Context) -> list[str]:
        terminated, submission = [], given(self.submission)
        for instance in self.hook.list_run_instances(self.dag_id, context["run_id"]):
            self.log.warning(
                "Terminating instance %s, which this run launched and left running", instance["InstanceId"]
            )
            ready_at = self.ready_times.get(ec2_tags.tags_of(instance).get(ec2_tags.TASK_ID))
            self._terminate(instance, submission=submission, ready_at=ready_at)
            terminated.append(instance["InstanceId"])
        if self.ledger_path:
            log_run_cost(self.log, self.ledger_path, context["run_id"], submission, given(self.outcome))
        return terminated


class SweepOrphanInstancesOperator(_Ec2Operator):
    """
    Terminate the event's backend instances whose Airflow run has ended or is unknown.

    Pushes the ids of the instances it terminated.

    :param event_name: the RAMP event (templated)
    :param grace_period_secs: instances younger than this are left alone
    """

    template_fields: Sequence[str] = ("event_name",)

    def __init__(self, *, event_name: str, grace_period_secs: float = 600, **kwargs) -> None:
        super().__init__(**kwargs)
        self.event_name = event_name
        self.grace_period_secs = grace_period_secs

    def execute(self, context: Context) -> list[str]:
        now = datetime.datetime.now(datetime.timezone.utc)
        terminated = []
        for instance in self.hook.list_backend_instances(self.event_name):
            instance_id, tags = instance["InstanceId"], ec2_tags.tags_of(instance)
            try:
                run_state = _run_state(context, tags)
            except RUN_STATE_ERRORS as err:
                self.log.warning("Leaving %s alone: the state of its run cannot be read now (%s)", instance_id, err)
                continue
            reason = ec2_lifecycle.orphan_reason(tags, instance["LaunchTime"], now, run_state, self.grace_period_secs)
            if reason is None:
                self.log.info("Keeping instance %s (run state %s)", instance_id, run_state)
                continue
            self.log.warning("Terminating orphan instance %s: %s", instance_id, reason)
            self._terminate(instance)
            terminated.append(instance_id)
        self.log.info("Terminated %d orphan instance(s) of event %s", len(terminated), self.event_name)
        return terminated


def _run_state(context: Context, tags: dict[str, str]) -> str | None:
    """The state of the Airflow run named by the tags; None when there is none or Airflow does not know it."""
    dag_id, run_id = tags.get(ec2_tags.DAG_ID), tags.get(ec2_tags.RUN_ID)
    if not dag_id or not run_id:
        return None
    return dag_run_state(context, dag_id, run_id)
