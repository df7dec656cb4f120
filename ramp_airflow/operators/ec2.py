"""The task that launches the instance training a RAMP submission, and the base of the EC2 tasks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from ramp_airflow.utils import ec2_lifecycle
from ramp_airflow.utils.aws_credentials import DEFAULT_CREDENTIALS, AwsCredentials
from ramp_airflow.utils.ec2_states import USABLE_STATES
from ramp_airflow.utils.run_values import given, submission_id_of

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.config import DatabaseSettings
    from ramp_airflow.hooks.ec2 import RampEc2Hook


class _Ec2Operator(BaseOperator):
    """
    Base of the tasks that work on the event's instances through :class:`~ramp_airflow.hooks.ec2.RampEc2Hook`.

    :param aws_credentials: how to reach EC2 (the config's ``aws`` section)
    """

    def __init__(self, *, aws_credentials: AwsCredentials = DEFAULT_CREDENTIALS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.aws_credentials = aws_credentials

    @cached_property
    def hook(self) -> RampEc2Hook:
        # Imported here: DAG files import the operators at every parse, and boto3 is slow to load.
        from ramp_airflow.hooks.ec2 import RampEc2Hook

        return RampEc2Hook(**self.aws_credentials.hook_kwargs())


# The XCom key of what the launch task pushes besides the instance id: the instance's id, type and
# market (:func:`~ramp_airflow.utils.ec2_lifecycle.launched`), what a training's cost depends on.
LAUNCHED_XCOM_KEY = "launched"


class LaunchInstanceOperator(_Ec2Operator):
    """
    Launch the instance that trains one submission, tagged with this run; push its id.

    Its id, type and market (spot or on-demand) are pushed too, under :data:`LAUNCHED_XCOM_KEY`.

    A retry of the task gets back the instance its first try launched; if the launch fails
    (a timeout, a kill) after EC2 created the instance, the task terminates it. With
    ``existing_instance_id`` nothing is launched: that instance is checked and its id pushed.

    It does not wait for the instance to boot: :class:`~ramp_airflow.sensors.instance.InstanceReadySensor` does.

    :param submission_id: the RAMP submission to train (templated)
    :param event_name: the RAMP event (``ramp.event_name``)
    :param instance_type: ``aws.instance_type``: a type, or a list of types tried in order when EC2
        has no capacity for one (see :meth:`~ramp_airflow.hooks.ec2.RampEc2Hook.launch_instance`)
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
        instance_type: str | Sequence[str],
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
        launched = self._existing_instance() or self._launch(submission_id, context["run_id"])
        context["ti"].xcom_push(key=LAUNCHED_XCOM_KEY, value=launched)
        return launched["instance_id"]

    def _check_claim(self, submission_id: int, run_id: str) -> None:
        if self.postgres_conn_id is None and self.database is None:
            return
        from ramp_airflow.hooks.ramp_database import ClaimLost, RampDatabaseHook, RunRef

        hook = RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=self.database)
        try:
            hook.check_claim(submission_id, RunRef(self.dag_id, run_id))
        except ClaimLost as err:
            raise AirflowFailException(f"No instance launched: {err}") from None

    def _existing_instance(self) -> dict[str, str] | None:
        existing_id = given(self.existing_instance_id)
        if not existing_id:
            return None
        instance = self.hook.describe_instance(existing_id)
        state = instance["State"]["Name"] if instance else "unknown to EC2"
        if state not in USABLE_STATES:
            raise AirflowFailException(
                f"The existing instance {existing_id} cannot train ({state}): "
                "give the id of a running instance, or none to launch one."
            )
        self.log.info("Training on the existing instance %s (%s); it will be left running", existing_id, state)
        return ec2_lifecycle.launched(instance)

    def _launch(self, submission_id: int, run_id: str) -> dict[str, str]:
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
