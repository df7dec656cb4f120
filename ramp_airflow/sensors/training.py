"""Wait for a submission's training to end on its instance."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from ramp_airflow.operators.fetch import FetchResultsMixin
from ramp_airflow.triggers.training import TrainingFinishedTrigger
from ramp_airflow.utils.ec2_lifecycle import GONE
from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin
from ramp_airflow.utils.remote_commands import TrainingWatch

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

OUTCOMES = frozenset({"finished", "died", "timeout", "lost"})


class TrainingFinishedSensor(FetchResultsMixin, InstanceMixin, BaseSensorOperator):
    """
    Wait until the training started by RsyncTrainOperator ends, copying its log as it grows.

    The outcome is returned (XCom), never raised, so that the DAG decides what follows:
    ``{"outcome": "finished", "exit_code": int}``, ``{"outcome": "died"}`` (no exit code and
    no live process), ``{"outcome": "timeout", "after_secs": float}`` (the process group was
    killed) or ``{"outcome": "lost"}`` (SSH failed and EC2 no longer reports the instance
    running). A dropped SSH connection is retried at the next poll.

    Given the local folders (see :class:`~ramp_airflow.operators.fetch.FetchResultsMixin`), the
    sensor also fetches the results as soon as the training is over and adds them to the
    outcome as ``"result"``: a task start less between the training's end and the
    instance's termination. With ``skip_when_lost``, a lost instance skips the task instead,
    so that a next attempt (``trigger_rule="all_skipped"``) can follow.

    The instance and how to log in: see :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin`.

    :param poke_interval: seconds between polls (``check_finished_training_interval_secs``); deferred,
        each poll waits on the instance up to that long for the end, which is seen within a second
    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit)
    :param instance_id: the EC2 instance, to tell a lost instance from a dropped connection
    :param aws_params: the AWS credentials for that check (``aws_conn_id``, ``region_name``,
        ``profile_name``, ``access_key_id``, ``secret_access_key``), as the EC2 tasks take them
    :param deferrable: wait in the triggerer rather than in a worker slot
    :param skip_when_lost: skip the task when the instance is lost, rather than return ``lost``
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, "instance_id", "expected_folds")

    def __init__(
        self,
        *,
        poke_interval: float = 10.0,
        training_timeout_secs: float | None = None,
        instance_id: str | None = None,
        aws_params: dict | None = None,
        deferrable: bool = True,
        skip_when_lost: bool = False,
        **kwargs,
    ):
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.training_timeout_secs = training_timeout_secs
        self.instance_id = instance_id
        self.aws_params = dict(aws_params or {})
        self.deferrable = deferrable
        self.skip_when_lost = skip_when_lost

    @cached_property
    def hook(self) -> InstanceSSHHook:
        return self.instance_hook()

    @cached_property
    def watch(self) -> TrainingWatch:
        return TrainingWatch(self.remote_ramp_kit_folder, self.submission, self.training_timeout_secs)

    def execute(self, context: Context) -> Any:
        self.hook  # noqa: B018 -- fails here, before waiting, without the pinned host key
        if not self.deferrable:
            return super().execute(context=context)
        self.defer(
            trigger=TrainingFinishedTrigger(
                submission_id=self.submission,
                **self.ssh_arguments,
                poll_interval=float(self.poke_interval),
                training_timeout_secs=self.training_timeout_secs,
                instance_id=self.instance_id,
                aws_params=self.aws_params,
            ),
            method_name="execute_complete",
        )

    def _instance_gone(self) -> bool:
        if not self.instance_id:
            return False
        from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

        readiness, description = RampEc2Hook(**self.aws_params).get_readiness(self.instance_id)
        self.log.info("EC2 reports instance %s: %s", self.instance_id, description)
        return readiness == GONE

    def poke(self, context: Context) -> PokeReturnValue:
        import paramiko  # slow to load: not at parse time

        try:
            status, output, _ = self.hook.run(self.watch.poll_command())
            if status != 0:
                # The poll always exits 0: anything else is a connection dropped mid-command.
                raise ConnectionError(f"the poll did not complete (exit status {status})")
        except (OSError, EOFError, paramiko.SSHException) as err:
            if isinstance(err, paramiko.AuthenticationException):
                raise
            self.log.warning(
                "SSH to %s failed (%s: %s); retrying at the next poll", self.address, type(err).__name__, err
            )
            if not self._instance_gone():
                return PokeReturnValue(is_done=False)
            return PokeReturnValue(is_done=True, xcom_value=self._conclude({"outcome": "lost"}))
        lines, outcome = self.watch.take(output)
        for line in lines:
            self.log.info("%s", line)
        if outcome and outcome["outcome"] == "timeout":
            said = self.hook.check_run(self.watch.kill_command(), "killing the timed-out training").strip()
            self.log.warning("Training timed out after %.0f s; its process group is %s", outcome["after_secs"], said)
        if outcome is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._conclude(outcome))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else None
            raise AirflowException(f"Watching the training failed: {message or event!r}")
        result = event.get("result")
        if not isinstance(result, dict) or result.get("outcome") not in OUTCOMES:
            raise AirflowException(f"The training trigger sent an event without a known outcome: {event!r}")
        return self._conclude(result)

    def _conclude(self, outcome: dict) -> dict:
        """The task's result for a training outcome: with the fetched results, or a skip for a lost instance."""
        if outcome["outcome"] == "lost":
            if self.skip_when_lost:
                raise AirflowSkipException(f"instance {self.instance_id} was lost during training")
            return outcome
        if self.local_predictions_folder is None:
            return outcome
        return {**outcome, "result": self.fetch_results(self.hook)}
