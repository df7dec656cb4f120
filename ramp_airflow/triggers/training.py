"""Watch a training on its instance from the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ramp_airflow.utils.ec2_lifecycle import GONE
from ramp_airflow.utils.remote_commands import TrainingWatch


def is_transient(err: BaseException) -> bool:
    """A dropped or refused connection heals by reconnecting; a wrong host key or credentials do not."""
    import asyncssh

    if isinstance(err, (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied)):
        return False
    return isinstance(err, (OSError, asyncssh.Error, asyncio.TimeoutError))


class TrainingFinishedTrigger(BaseTrigger):
    """
    Poll a training's record and log over SSH until it is over; yield one event.

    Each poll waits on the instance, up to ``poll_interval``, for the training to end, so the
    end is noticed within a second while the log is copied once per interval.

    The event is ``{"status": "success", "result": <outcome>, "host_key": <the pinned key>}``
    (outcomes: see :class:`~ramp_airflow.utils.training_wait_mixin.TrainingWaitMixin`; the key
    is for the resumed task, which fetches the results with it) or
    ``{"status": "error", "message": ...}`` for a wrong host key or refused credentials.
    A failed connection is retried at the next poll; with ``instance_id``, an instance that
    EC2 no longer reports as running gives the outcome ``lost``.

    :param submission_id: the submission's id
    :param address: the instance's IP address or host name
    :param host_key: the host key pinned at first contact, ``"<type> <base64>"``
    :param remote_ramp_kit_folder: the kit folder on the instance
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :param poll_interval: seconds between polls
    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit)
    :param instance_id: the EC2 instance, to tell a lost instance from a dropped connection
    :param aws_params: the AWS credentials for that check (``aws_conn_id``, ``region_name``, ...)
    :param log_offset: bytes of the log already shown
    """

    def __init__(
        self,
        submission_id,
        address,
        host_key,
        remote_ramp_kit_folder,
        ami_user_name,
        key_path=None,
        ssh_conn_id=None,
        ssh_port=22,
        poll_interval=10.0,
        training_timeout_secs=None,
        instance_id=None,
        aws_params=None,
        log_offset=0,
    ):
        super().__init__()
        self.kwargs = {
            "submission_id": submission_id,
            "address": address,
            "host_key": host_key,
            "remote_ramp_kit_folder": remote_ramp_kit_folder,
            "ami_user_name": ami_user_name,
            "key_path": key_path,
            "ssh_conn_id": ssh_conn_id,
            "ssh_port": ssh_port,
            "poll_interval": poll_interval,
            "training_timeout_secs": training_timeout_secs,
            "instance_id": instance_id,
            "aws_params": dict(aws_params or {}),
            "log_offset": log_offset,
        }
        self.watch = TrainingWatch(remote_ramp_kit_folder, submission_id, training_timeout_secs, log_offset)
        from ramp_airflow.hooks.instance_ssh import InstanceSSHHookAsync  # slow to load: not at parse time

        self.hook = InstanceSSHHookAsync(address, ami_user_name, key_path, ssh_conn_id, ssh_port, host_key)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", dict(self.kwargs, log_offset=self.watch.log_offset)

    async def _instance_gone(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        instance_id = self.kwargs["instance_id"]
        if not instance_id:
            return False
        try:
            from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

            readiness, description = await RampEc2Hook(**self.kwargs["aws_params"]).get_readiness_async(instance_id)
        except (BotoCoreError, ClientError) as err:
            self.log.warning("Could not ask EC2 about %s: %s", instance_id, err)
            return False
        self.log.info("EC2 reports instance %s: %s", instance_id, description)
        return readiness == GONE

    async def _poll(self) -> dict | None:
        # The remote command waits for the end itself: it is seen at once, with one command per interval.
        wait_secs = self.kwargs["poll_interval"]
        status, output = await self.hook.run(self.watch.poll_command(wait_secs), timeout=wait_secs + 120)
        if status != 0:
            # The poll always exits 0: anything else is a connection dropped mid-command.
            raise ConnectionError(f"the poll did not complete (exit status {status})")
        lines, outcome = self.watch.take(output)
        for line in lines:
            self.log.info("%s", line)
        if outcome and outcome["outcome"] == "timeout":
            _, said = await self.hook.run(self.watch.kill_command())
            self.log.warning(
                "Training timed out after %.0f s; its process group is %s", outcome["after_secs"], said.decode().strip()
            )
        return outcome

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            polled_at = loop.time()
            try:
                outcome = await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not is_transient(err):
                    yield TriggerEvent({"status": "error", "message": f"SSH to {self.kwargs['address']}: {err}"})
                    return
                self.log.warning(
                    "SSH to %s failed (%s: %s); retrying at the next poll",
                    self.kwargs["address"],
                    type(err).__name__,
                    err,
                )
                if await self._instance_gone():
                    outcome = {"outcome": "lost"}
                else:
                    outcome = None
            if outcome is not None:
                yield TriggerEvent({"status": "success", "result": outcome, "host_key": self.kwargs["host_key"]})
                return
            # A poll that waited its whole interval is followed by the next at once.
            await asyncio.sleep(max(0.0, polled_at + self.kwargs["poll_interval"] - loop.time()))
