"""Tasks that launch, terminate and sweep the instances training RAMP submissions."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator
from airflow.sdk.api.client import ServerResponseError
from airflow.sdk.exceptions import AirflowRuntimeError

from ramp_airflow.triggers.ec2 import InstanceReadyTrigger
from ramp_airflow.utils import ec2_lifecycle, ec2_tags
from ramp_airflow.utils.ec2_mixins import RampEc2HookMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


# A worker asks the API server through its supervisor (AirflowRuntimeError); dag.test() asks it directly.
_STATE_ERRORS = (AirflowRuntimeError, ServerResponseError)


def _given(instance_id: str | None) -> str | None:
    """An instance id, or None; a Jinja template renders a missing value as the text "None"."""
    return None if instance_id in (None, "", "None") else instance_id


def _submission_id(value) -> int:
    """The templated submission id as an int (templates render it as text)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AirflowFailException(f"submission_id must be a whole number, not {value!r}") from None


class LaunchInstanceOperator(RampEc2HookMixin, BaseOperator):
    """
    Launch the instance that trains one submission, tagged with this run; push its id.

    A retry of the task gets back the instance its first try launched; if the launch fails
    (a timeout, a kill) after EC2 created the instance, the task terminates it. With
    ``existing_instance_id`` nothing is launched: that instance is checked and its id pushed.

    With ``wait_for_ready``, the task then waits until the instance runs with its status checks
    passed (in the triggerer when ``deferrable``) and also pushes its SSH address (XCom key
    ``address``): one task instead of a launch and an :class:`InstanceReadySensor`, which saves
    a task start, billed, before every training. An instance the task did not just launch (an
    existing one, or a retry's) is looked at once before deferring. An instance that will not
    become ready is terminated (unless it was an existing one) and the task fails.

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
    :param wait_for_ready: wait until the instance is ready to train on
    :param check_interval: seconds between two readiness checks (``aws.check_status_interval_secs``)
    :param ready_timeout: seconds to wait for readiness at most (``aws.instance_ready_timeout_secs``)
    :param deferrable: wait in the triggerer, holding no worker slot
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
        wait_for_ready: bool = False,
        check_interval: float = 5,
        ready_timeout: float = 900,
        deferrable: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.submission_id = submission_id
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
        self.wait_for_ready = wait_for_ready
        self.check_interval = check_interval
        self.ready_timeout = ready_timeout
        self.deferrable = deferrable

    def execute(self, context: Context) -> str:
        instance_id = self._existing_instance() or self._launch(context)
        if not self.wait_for_ready:
            return instance_id
        ti = context.get("ti")
        if self.deferrable and (_given(self.existing_instance_id) or (ti is not None and ti.try_number > 1)):
            # An instance this try did not launch may be ready already. Look before deferring: a trigger that
            # fires at once can be taken for a task killed externally (apache/airflow#72716).
            verdict = self.hook.get_readiness(instance_id)
            if verdict[0] != ec2_lifecycle.WAITING:
                return self._ready(context, instance_id, *verdict)
        if not self.deferrable:
            deadline = time.monotonic() + self.ready_timeout
            while (verdict := self.hook.get_readiness(instance_id))[0] == ec2_lifecycle.WAITING:
                self.log.info("Instance %s: %s", instance_id, verdict[1])
                if time.monotonic() > deadline:
                    verdict = (ec2_lifecycle.TIMEOUT, verdict[1])
                    break
                time.sleep(self.check_interval)
            return self._ready(context, instance_id, *verdict)
        self.defer(
            trigger=InstanceReadyTrigger(
                instance_id=instance_id,
                poll_interval=self.check_interval,
                deadline=time.time() + self.ready_timeout,
                aws_params=self.aws_params,
            ),
            method_name="execute_complete",
            # A hard bound in case the triggerer itself stalls; the trigger times out first.
            timeout=datetime.timedelta(seconds=self.ready_timeout + self.check_interval),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if not event or not event.get("instance_id"):
            raise AirflowException(f"Unexpected event while waiting for the instance to be ready: {event!r}")
        return self._ready(context, event["instance_id"], event["status"], event["message"], event.get("address"))

    def _ready(
        self, context: Context, instance_id: str, verdict: str, description: str, address: str | None = None
    ) -> str:
        """Push the address of a ready instance; else terminate what this run launched, and fail."""
        self.log.info("Instance %s: %s", instance_id, description)
        error = ec2_lifecycle.unready_error(instance_id, verdict, description, self.ready_timeout)
        if error:
            if not _given(self.existing_instance_id):
                # Its teardown will not run: Airflow tears down only what a setup that succeeded set up.
                try:
                    self.hook.terminate_instance(instance_id)
                except Exception:
                    self.log.exception("Could not terminate %s; the orphan sweep will", instance_id)
            raise AirflowException(error)
        context["ti"].xcom_push(key="address", value=address or self.hook.get_ssh_address(instance_id))
        return instance_id

    def _existing_instance(self) -> str | None:
        existing_id = _given(self.existing_instance_id)
        if existing_id:
            instance = self.hook.describe_instance(existing_id)
            state = instance["State"]["Name"] if instance else "unknown to EC2"
            if state not in ("pending", "running"):
                raise AirflowFailException(
                    f"The existing instance {existing_id} cannot train ({state}): "
                    "give the id of a running instance, or none to launch one."
                )
            self.log.info("Training on the existing instance %s (%s); it will be left running", existing_id, state)
        return existing_id

    def _launch(self, context: Context) -> str:
        submission_id = _submission_id(self.submission_id)
        image_id = self.hook.resolve_image(self.ami_image_id, self.ami_image_name, self.ami_owners)
        launch = dict(submission_id=submission_id, dag_id=self.dag_id, run_id=context["run_id"], task_id=self.task_id)
        try:
            return self.hook.launch_instance(
                image_id=image_id,
                instance_type=self.instance_type,
                key_name=self.key_name,
                security_group=self.security_group,
                event_name=self.event_name,
                use_spot_instance=self.use_spot_instance,
                spot_wait_secs=self.spot_wait_secs,
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


class TerminateInstanceOperator(RampEc2HookMixin, BaseOperator):
    """
    Terminate the instance this run launched; meant as the run's teardown task.

    An instance not launched by this DAG run (an existing instance) is left running; one
    already gone, or no instance id (the launch created none), is a success.

    :param instance_id: the instance to terminate (templated), usually the launch task's XCom
    """

    template_fields: Sequence[str] = ("instance_id",)
    ui_color = "#e8a0a0"

    def __init__(self, *, instance_id: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.instance_id = instance_id

    def execute(self, context: Context) -> None:
        instance_id = _given(self.instance_id)
        instance = self.hook.describe_instance(instance_id) if instance_id else None
        if instance_id is None:
            self.log.info("No instance to terminate: the launch did not create one")
        elif instance is None:
            self.log.info("Instance %s is already gone", instance_id)
        elif not ec2_tags.launched_by(ec2_tags.tags_of(instance), self.dag_id, context["run_id"]):
            self.log.info("Leaving instance %s running: this run did not launch it", instance_id)
        else:
            self.hook.terminate_instance(instance_id)


class SweepOrphanInstancesOperator(RampEc2HookMixin, BaseOperator):
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
            except _STATE_ERRORS as err:
                self.log.warning("Leaving %s alone: the state of its run cannot be read now (%s)", instance_id, err)
                continue
            reason = ec2_lifecycle.orphan_reason(tags, instance["LaunchTime"], now, run_state, self.grace_period_secs)
            if reason is None:
                self.log.info("Keeping instance %s (run state %s)", instance_id, run_state)
                continue
            self.log.warning("Terminating orphan instance %s: %s", instance_id, reason)
            self.hook.terminate_instance(instance_id)
            terminated.append(instance_id)
        self.log.info("Terminated %d orphan instance(s) of event %s", len(terminated), self.event_name)
        return terminated


def _run_state(context: Context, tags: dict[str, str]) -> str | None:
    """The state of the Airflow run named by the tags; None when there is none or Airflow does not know it."""
    dag_id, run_id = tags.get(ec2_tags.DAG_ID), tags.get(ec2_tags.RUN_ID)
    if not dag_id or not run_id:
        return None
    try:
        state = context["ti"].get_dagrun_state(dag_id, run_id)
    except _STATE_ERRORS as err:
        if _status_code(err) == 404:
            return None
        raise
    return getattr(state, "value", state)


def _status_code(err: Exception) -> int | None:
    """The API server's HTTP status behind an error of the Task SDK."""
    if isinstance(err, AirflowRuntimeError):
        return (err.error.detail or {}).get("status_code")
    return err.response.status_code  # ServerResponseError: raised as is by dag.test()'s in-process API
