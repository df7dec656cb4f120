"""Watch a training on its instance from the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSkippedEvent, TriggerEvent

from ramp_airflow.triggers.cancellation import cancel_training
from ramp_airflow.triggers.ec2 import ec2_hook
from ramp_airflow.triggers.task_end import task_success
from ramp_airflow.utils import ec2_lifecycle
from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.instance_login import InstanceLogin
from ramp_airflow.utils.layout import RemoteSubmissionPaths
from ramp_airflow.utils.run_values import given, submission_id_of
from ramp_airflow.utils.ssh_commands import RemoteOutputTooLarge
from ramp_airflow.utils.training_reports import TrainingWatch


def is_transient(err: BaseException) -> bool:
    """A dropped or refused connection heals by reconnecting; a wrong host key or credentials do not."""
    import asyncssh

    if isinstance(err, (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied)):
        return False
    return isinstance(err, (OSError, asyncssh.Error, asyncio.TimeoutError))


class TrainingFinishedTrigger(BaseTrigger):
    """
    Poll a training's record and log over SSH until it is over, copying the log to the task log.

    Each poll waits on the instance, up to ``poll_interval``, for the training to end, so the
    end is noticed within a second while the log is copied once per interval. A failed
    connection is retried at the next poll; an instance that EC2 no longer reports as running
    gives the outcome ``lost``. A training past ``training_timeout_secs``, counted on the Airflow
    side, has its process group killed and the outcome ``timeout``; a job record the participant
    garbled ends the wait with the outcome ``died``.

    Yields one event, ``{"status": "success", "result": <outcome>}`` (see
    :mod:`ramp_airflow.utils.training_states`) or ``{"status": "error", "message": ...}`` for a
    wrong host key or refused credentials. With ``end_from_trigger`` it ends the task instead:
    the outcome as its XCom, skipped for a lost instance when ``skip_when_lost``, or failed.
    Cancelled by an operator, it ends the training
    (:func:`~ramp_airflow.triggers.cancellation.cancel_training`).

    :param submission_id: the submission (templated when the sensor starts here)
    :param address: the instance's IP address or host name (templated likewise)
    :param host_key: the host key pinned at first contact, ``"<type> <base64>"`` (templated likewise)
    :param instance_id: the EC2 instance, to tell a lost instance from a dropped connection
        (templated likewise)
    :param login: :meth:`~ramp_airflow.utils.instance_login.InstanceLogin.to_dict`
    :param aws: :meth:`~ramp_airflow.utils.aws_credentials.AwsCredentials.reference`
    :param poll_interval: seconds between polls (``aws.check_finished_training_interval_secs``)
    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit)
    :param training_started_at: when the upload task started the training, after its upload: a unix time of the Airflow side
        (templated when the sensor starts here); ``None``: when this trigger started
    :param skip_when_lost: a lost instance skips the task, so that the next attempt runs
    :param end_from_trigger: end the task here, without resuming it in a worker
    """

    def __init__(
        self,
        submission_id: Any,
        address: str,
        host_key: str,
        instance_id: str | None,
        login: dict[str, Any],
        aws: dict[str, Any],
        poll_interval: float = 10.0,
        training_timeout_secs: float | None = None,
        training_started_at: Any = None,
        skip_when_lost: bool = False,
        end_from_trigger: bool = False,
    ):
        super().__init__()
        self.submission_id = submission_id
        self.address = address
        self.host_key = host_key
        self.instance_id = instance_id
        self.login = login
        self.aws = aws
        self.poll_interval = poll_interval
        self.training_timeout_secs = training_timeout_secs
        self.training_started_at = training_started_at
        self.skip_when_lost = skip_when_lost
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        names = (
            "submission_id",
            "address",
            "host_key",
            "instance_id",
            "login",
            "aws",
            "poll_interval",
            "training_timeout_secs",
            "training_started_at",
            "skip_when_lost",
            "end_from_trigger",
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", {name: getattr(self, name) for name in names}

    async def run(self):
        # Built here, not in __init__: when the sensor starts in the triggerer, the templated
        # arguments are rendered after the trigger is made.
        from ramp_airflow.hooks.instance_ssh_async import InstanceSSHHookAsync  # slow to load: not at parse time

        login = InstanceLogin(**self.login)
        paths = RemoteSubmissionPaths(login.remote_ramp_kit_folder, submission_id_of(self.submission_id))
        watch = TrainingWatch(paths)
        try:
            hook = InstanceSSHHookAsync(self.address, login, self.host_key)
        except Exception as err:
            outcome, error = None, f"cannot watch the training on {self.address}: {err}"
        else:
            outcome, error = await self._wait(hook, watch)
        async for event in self._end(outcome, error):
            yield event

    async def on_kill(self) -> None:
        await cancel_training(self, given(self.instance_id), self.aws)

    async def _wait(self, hook, watch: TrainingWatch) -> tuple[dict | None, str | None]:
        """``(outcome, None)`` once the training is over, or ``(None, error)`` when it cannot be watched."""
        # The time limit counts on this side's clock, from when the upload that started the training began: the
        # instance's own records are the participant's to forge.
        started = float(given(self.training_started_at) or time.time())
        deadline = started + self.training_timeout_secs if self.training_timeout_secs else math.inf
        while True:
            polled_at = time.time()
            if polled_at >= deadline:
                await self._kill(hook, watch)
                return {"outcome": ts.TIMEOUT, "after_secs": polled_at - started}, None
            wait_secs = min(self.poll_interval, deadline - polled_at)
            try:
                outcome = await self._poll(hook, watch, wait_secs)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not is_transient(err):
                    return None, f"SSH to {self.address}: {err}"
                self.log.warning(
                    "SSH to %s failed (%s: %s); retrying at the next poll", self.address, type(err).__name__, err
                )
                outcome = {"outcome": ts.LOST} if await self._instance_gone() else None
            if outcome is not None:
                return outcome, None
            # A poll that waited its whole interval is followed by the next at once.
            await asyncio.sleep(max(0.0, polled_at + wait_secs - time.time()))

    async def _poll(self, hook, watch: TrainingWatch, wait_secs: float) -> dict | None:
        # The remote command waits for the end itself: it is seen at once, with one command per interval.
        try:
            status, output = await hook.run(watch.poll_command(wait_secs), timeout=wait_secs + 120)
        except RemoteOutputTooLarge as err:
            # Only the participant's side of the instance can make a poll print that much.
            self.log.warning("The training's poll printed too much (%s): taking the training as ended", err)
            return {"outcome": ts.DIED}
        if status != 0:
            # The poll always exits 0: anything else is a connection dropped mid-command.
            raise ConnectionError(f"the poll did not complete (exit status {status})")
        try:
            lines, outcome = watch.take(output)
        except ValueError as err:
            # A record the participant's code garbled: the training is over, and its files say how it went.
            self.log.warning("The training's record on the instance is garbled (%s): taking the training as ended", err)
            return {"outcome": ts.DIED}
        for line in lines:
            self.log.info("%s", line)
        return outcome

    async def _kill(self, hook, watch: TrainingWatch) -> None:
        """End the training's process group; bounded, and a failure only logged (the teardown ends the instance)."""
        try:
            _, said = await hook.run(watch.kill_command(), timeout=60)
            result = said.decode("utf-8", "replace").strip()[:20]
        except Exception as err:
            result = f"unknown ({type(err).__name__}: {err})"
        self.log.warning(
            "Training ran past training_timeout_secs (%s s); its process group is %s",
            self.training_timeout_secs,
            result,
        )

    async def _instance_gone(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.instance_id:
            return False
        try:
            readiness, description = await ec2_hook(self.aws).get_readiness_async(self.instance_id)
        except (BotoCoreError, ClientError) as err:
            self.log.warning("Could not ask EC2 about %s: %s", self.instance_id, err)
            return False
        self.log.info("EC2 reports instance %s: %s", self.instance_id, description)
        return readiness == ec2_lifecycle.GONE

    async def _end(self, outcome: dict | None, error: str | None):
        if not self.end_from_trigger:
            yield TriggerEvent(
                {"status": "error", "message": error} if error else {"status": "success", "result": outcome}
            )
        elif error:
            self.log.error("Watching the training failed: %s", error)
            yield TaskFailedEvent()
        elif outcome["outcome"] == ts.LOST and self.skip_when_lost:
            self.log.warning("Instance %s was lost during training: the next attempt takes over", self.instance_id)
            yield TaskSkippedEvent()
        else:
            yield await task_success(self, outcome)
