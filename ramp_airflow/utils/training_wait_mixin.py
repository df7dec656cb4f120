"""Waiting for a training's end on its instance, and what that end gives: shared by the tasks that wait."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException

from ramp_airflow.operators.fetch import FetchResultsMixin
from ramp_airflow.triggers.training import TrainingFinishedTrigger
from ramp_airflow.utils.ec2_lifecycle import GONE
from ramp_airflow.utils.remote_commands import TrainingWatch

if TYPE_CHECKING:
    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

OUTCOMES = frozenset({"finished", "died", "timeout", "lost"})
WAIT_TEMPLATE_FIELDS = ("instance_id", "expected_folds")


class TrainingWaitMixin(FetchResultsMixin):
    """
    Wait for a training's end, in the triggerer or by polling, and conclude with its results.

    The outcome is returned, never raised, so that the DAG decides what follows:
    ``{"outcome": "finished", "exit_code": int}``, ``{"outcome": "died"}`` (no exit code and
    no live process), ``{"outcome": "timeout", "after_secs": float}`` (the process group was
    killed) or ``{"outcome": "lost"}`` (SSH failed and EC2 no longer reports the instance
    running). A dropped SSH connection is retried at the next poll. Given the local folders (see
    :class:`~ramp_airflow.operators.fetch.FetchResultsMixin`), the results are fetched as soon as
    the training is over and added to the outcome as ``"result"``.

    Mixed into :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin` tasks, after it.

    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit)
    :param instance_id: the EC2 instance, to tell a lost instance from a dropped connection
    :param aws_params: the AWS credentials for that check (``aws_conn_id``, ``region_name``,
        ``profile_name``, ``access_key_id``, ``secret_access_key``), as the EC2 tasks take them
    :param skip_when_lost: skip the task when the instance is lost, rather than return ``lost``,
        so that a next attempt (``trigger_rule="all_skipped"``) can follow
    """

    def __init__(
        self,
        *,
        training_timeout_secs: float | None = None,
        instance_id: str | None = None,
        aws_params: dict | None = None,
        skip_when_lost: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.training_timeout_secs = training_timeout_secs
        self.instance_id = instance_id
        self.aws_params = dict(aws_params or {})
        self.skip_when_lost = skip_when_lost

    @cached_property
    def watch(self) -> TrainingWatch:
        return TrainingWatch(self.remote_ramp_kit_folder, self.submission, self.training_timeout_secs)

    def training_trigger(self, poll_interval: float, host_key: str) -> TrainingFinishedTrigger:
        """The trigger that waits for this training's end, logging in with the pinned ``host_key``."""
        return TrainingFinishedTrigger(
            submission_id=self.submission,
            **{**self.ssh_arguments, "host_key": host_key},
            poll_interval=float(poll_interval),
            training_timeout_secs=self.training_timeout_secs,
            instance_id=self.instance_id,
            aws_params=self.aws_params,
        )

    def poll_training(self, hook: InstanceSSHHook) -> dict | None:
        """One poll from the worker: the outcome once the training is over, else None."""
        import paramiko  # slow to load: not at parse time

        try:
            status, output, _ = hook.run(self.watch.poll_command())
            if status != 0:
                # The poll always exits 0: anything else is a connection dropped mid-command.
                raise ConnectionError(f"the poll did not complete (exit status {status})")
        except (OSError, EOFError, paramiko.SSHException) as err:
            if isinstance(err, paramiko.AuthenticationException):
                raise
            self.log.warning(
                "SSH to %s failed (%s: %s); retrying at the next poll", self.address, type(err).__name__, err
            )
            return {"outcome": "lost"} if self._instance_gone() else None
        lines, outcome = self.watch.take(output)
        for line in lines:
            self.log.info("%s", line)
        if outcome and outcome["outcome"] == "timeout":
            said = hook.check_run(self.watch.kill_command(), "killing the timed-out training").strip()
            self.log.warning("Training timed out after %.0f s; its process group is %s", outcome["after_secs"], said)
        return outcome

    def outcome_of(self, event: Any) -> dict:
        """The outcome a :class:`TrainingFinishedTrigger` event reports; fails the task on anything else."""
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else None
            raise AirflowException(f"Watching the training failed: {message or event!r}")
        result = event.get("result")
        if not isinstance(result, dict) or result.get("outcome") not in OUTCOMES:
            raise AirflowException(f"The training trigger sent an event without a known outcome: {event!r}")
        return result

    def conclude(self, outcome: dict, hook: InstanceSSHHook | None) -> dict:
        """
        The task's result for a training outcome: with the results fetched with ``hook``, or a
        skip for a lost instance (which needs no hook).
        """
        if outcome["outcome"] == "lost":
            if self.skip_when_lost:
                raise AirflowSkipException(f"instance {self.instance_id} was lost during training")
            return outcome
        if self.local_predictions_folder is None:
            return outcome
        return {**outcome, "result": self.fetch_results(hook)}

    def _instance_gone(self) -> bool:
        if not self.instance_id:
            return False
        from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

        readiness, description = RampEc2Hook(**self.aws_params).get_readiness(self.instance_id)
        self.log.info("EC2 reports instance %s: %s", self.instance_id, description)
        return readiness == GONE
