"""Wait on a training instance: until it is ready to train on, then until its training has ended.

Each wait is one trigger. By default the sensor starts in the triggerer and ends there (Airflow's
``start_from_trigger``), so a wait takes no worker slot and no worker start, both billed while the
instance runs. Run any other way (``dag.test()``, ``airflow dags test``), ``execute`` defers to the
same trigger and the task resumes in the worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)
from airflow.triggers.base import StartTriggerArgs

from ramp_airflow.triggers.ec2 import InstanceReadyTrigger
from ramp_airflow.triggers.training import TrainingFinishedTrigger
from ramp_airflow.utils import ec2_lifecycle
from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.aws_credentials import DEFAULT_CREDENTIALS, AwsCredentials

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.ec2 import RampEc2Hook
    from ramp_airflow.utils.instance_login import InstanceLogin

# A hard bound on a wait beyond its own timeout, in case the triggerer itself stalls.
_TRIGGER_MARGIN = timedelta(seconds=60)


def _starting_in_triggerer(sensor: BaseSensorOperator, trigger, timeout: timedelta | None) -> StartTriggerArgs | None:
    """
    The sensor's ``start_trigger_args``: its trigger's arguments, the templated ones as templates;
    None when a templated argument is neither a template string nor a plain value (an ``XComArg``),
    which only a worker resolves.
    """
    classpath, kwargs = trigger.serialize()
    if not all(isinstance(getattr(sensor, name), str | int | float | None) for name in sensor.template_fields):
        return None
    return dataclasses.replace(sensor.start_trigger_args, trigger_cls=classpath, trigger_kwargs=kwargs, timeout=timeout)


class InstanceReadySensor(BaseSensorOperator):
    """
    Wait until an instance is running with its status checks passed; return its SSH address, and push
    when it saw it ready under the XCom key :data:`~ramp_airflow.utils.ec2_lifecycle.READY_AT`.

    Fails, saying so, when the instance is stopped or terminated meanwhile (a reclaimed spot
    instance, someone in the console) or is not ready in time; the run's teardown terminates it.

    :param instance_id: the instance (templated), usually the launch task's XCom
    :param aws_credentials: how to reach EC2
    :param config_path: the event config, from which a trigger reads a secret key back
    :param poke_interval: seconds between checks (``aws.check_status_interval_secs``)
    :param timeout: seconds to wait at most (``aws.instance_ready_timeout_secs``)
    :param deferrable: wait in the triggerer, holding no worker slot
    :param start_from_trigger: with ``deferrable``, start and end in the triggerer
    :param skip_when_lost: skip, rather than fail, when the instance is gone (a reclaimed spot
        instance), so that another training attempt (``trigger_rule="all_skipped"``) can follow
    """

    template_fields: Sequence[str] = ("instance_id",)
    ui_color = "#f9c915"
    start_trigger_args = StartTriggerArgs(
        trigger_cls="ramp_airflow.triggers.ec2.InstanceReadyTrigger", next_method="execute_complete"
    )
    start_from_trigger = False

    def __init__(
        self,
        *,
        instance_id: str,
        aws_credentials: AwsCredentials = DEFAULT_CREDENTIALS,
        config_path: str | None = None,
        poke_interval: float = 5,
        timeout: float = 900,
        deferrable: bool = True,
        start_from_trigger: bool = True,
        skip_when_lost: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.skip_when_lost = skip_when_lost
        self.instance_id = instance_id
        self.aws_credentials = aws_credentials
        self.config_path = config_path
        self.deferrable = deferrable
        if deferrable and start_from_trigger:
            bound = timedelta(seconds=timeout) + _TRIGGER_MARGIN
            self.start_trigger_args = _starting_in_triggerer(self, self._trigger(end_from_trigger=True), bound)
            self.start_from_trigger = self.start_trigger_args is not None

    @cached_property
    def hook(self) -> RampEc2Hook:
        from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

        return RampEc2Hook(**self.aws_credentials.hook_kwargs())

    def _trigger(self, end_from_trigger: bool) -> InstanceReadyTrigger:
        return InstanceReadyTrigger(
            instance_id=self.instance_id,
            aws=self.aws_credentials.reference(self.config_path),
            poll_interval=self.poke_interval,
            timeout_secs=self.timeout,
            end_from_trigger=end_from_trigger,
            skip_when_lost=self.skip_when_lost,
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context=context)
        self.defer(
            trigger=self._trigger(end_from_trigger=False),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + _TRIGGER_MARGIN,
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        verdict, description = self.hook.get_readiness(self.instance_id)
        self._fail_unless_usable(verdict, description)
        if verdict != ec2_lifecycle.READY:
            return False
        context["ti"].xcom_push(key=ec2_lifecycle.READY_AT, value=ec2_lifecycle.now_stamp())
        return PokeReturnValue(is_done=True, xcom_value=self.hook.get_ssh_address(self.instance_id))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if not event or event.get("instance_id") != self.instance_id:
            raise AirflowException(f"Unexpected event while waiting for instance {self.instance_id}: {event!r}")
        self._fail_unless_usable(event["status"], event["message"])
        context["ti"].xcom_push(key=ec2_lifecycle.READY_AT, value=event.get(ec2_lifecycle.READY_AT))
        return event["address"]

    def _fail_unless_usable(self, verdict: str, description: str) -> None:
        self.log.info("Instance %s: %s", self.instance_id, description)
        if verdict == ec2_lifecycle.GONE and self.skip_when_lost:
            raise AirflowSkipException(f"instance {self.instance_id} is gone: the next attempt trains on a new one")
        error = ec2_lifecycle.unready_error(self.instance_id, verdict, description, self.timeout)
        if error:
            raise AirflowException(error)


class TrainingFinishedSensor(BaseSensorOperator):
    """
    Wait until the training the upload task started ends, copying its log into the task log.

    Returns the outcome, never raises it, so that the DAG decides what follows:
    ``{"outcome": "finished", "exit_code": int}``, ``{"outcome": "died"}`` (no exit code and no
    live process), ``{"outcome": "timeout", "after_secs": float}`` (its process group was killed)
    or ``{"outcome": "lost"}`` (SSH failed and EC2 no longer reports the instance running). It
    always waits in the triggerer: the wait is :class:`TrainingFinishedTrigger`, and nothing else.

    :param submission_id: the submission (templated)
    :param address: the instance's address (templated), as the ready sensor returned it
    :param host_key: the host key the upload learned (templated); only that key is accepted
    :param instance_id: the EC2 instance (templated), to tell a lost instance from a dropped connection
    :param login: how to log in to the instance
    :param aws_credentials: how to ask EC2 about the instance
    :param config_path: the event config, from which a trigger reads a secret key back
    :param poke_interval: seconds between polls (``aws.check_finished_training_interval_secs``); each
        poll waits on the instance up to that long for the end, which is seen within a second
    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit), counted
        on the Airflow side from ``training_started_at``
    :param training_started_at: when the upload task started the training, after its upload (templated), as it returned it
    :param skip_when_lost: skip the task when the instance is lost, rather than return ``lost``,
        so that a next attempt (``trigger_rule="all_skipped"``) can follow
    :param start_from_trigger: start and end in the triggerer
    """

    template_fields: Sequence[str] = ("submission_id", "address", "host_key", "instance_id", "training_started_at")
    ui_color = "#d6eaf8"
    start_trigger_args = StartTriggerArgs(
        trigger_cls="ramp_airflow.triggers.training.TrainingFinishedTrigger", next_method="execute_complete"
    )
    start_from_trigger = False

    def __init__(
        self,
        *,
        submission_id: Any,
        address: str,
        host_key: str,
        instance_id: str | None,
        login: InstanceLogin,
        aws_credentials: AwsCredentials = DEFAULT_CREDENTIALS,
        config_path: str | None = None,
        poke_interval: float = 10.0,
        training_timeout_secs: float | None = None,
        training_started_at: Any = None,
        skip_when_lost: bool = False,
        start_from_trigger: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.submission_id = submission_id
        self.address = address
        self.host_key = host_key
        self.instance_id = instance_id
        self.login = login
        self.aws_credentials = aws_credentials
        self.config_path = config_path
        self.training_timeout_secs = training_timeout_secs
        self.training_started_at = training_started_at
        self.skip_when_lost = skip_when_lost
        if start_from_trigger:
            # The sensor's own timeout, if any, bounds the wait; the training's timeout is the trigger's.
            bound = timedelta(seconds=self.timeout) + _TRIGGER_MARGIN if self.timeout else None
            self.start_trigger_args = _starting_in_triggerer(self, self._trigger(end_from_trigger=True), bound)
            self.start_from_trigger = self.start_trigger_args is not None

    def _trigger(self, end_from_trigger: bool) -> TrainingFinishedTrigger:
        return TrainingFinishedTrigger(
            submission_id=self.submission_id,
            address=self.address,
            host_key=self.host_key,
            instance_id=self.instance_id,
            login=self.login.to_dict(),
            aws=self.aws_credentials.reference(self.config_path),
            poll_interval=float(self.poke_interval),
            training_timeout_secs=self.training_timeout_secs,
            training_started_at=self.training_started_at,
            skip_when_lost=self.skip_when_lost,
            end_from_trigger=end_from_trigger,
        )

    def execute(self, context: Context) -> Any:
        self.defer(trigger=self._trigger(end_from_trigger=False), method_name="execute_complete")

    def poke(self, context: Context) -> bool:
        raise AirflowException("TrainingFinishedSensor waits in the triggerer only; it has no poke mode")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else None
            raise AirflowException(f"Watching the training failed: {message or event!r}")
        outcome = event.get("result")
        if not isinstance(outcome, dict) or outcome.get("outcome") not in ts.OUTCOMES:
            raise AirflowException(f"The training trigger sent an event without a known outcome: {event!r}")
        if outcome["outcome"] == ts.LOST and self.skip_when_lost:
            raise AirflowSkipException(f"instance {self.instance_id} was lost during training")
        return outcome
