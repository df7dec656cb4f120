"""Wait, in the triggerer, until an instance is ready to train on."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSkippedEvent, TriggerEvent
from botocore.exceptions import BotoCoreError, ClientError

from ramp_airflow.triggers.cancellation import cancel_training
from ramp_airflow.triggers.task_end import task_success
from ramp_airflow.utils import ec2_lifecycle

if TYPE_CHECKING:
    from ramp_airflow.hooks.ec2 import RampEc2Hook


def ec2_hook(aws: dict[str, Any]) -> RampEc2Hook:
    """
    The EC2 hook of a trigger, from :meth:`AwsCredentials.reference
    <ramp_airflow.utils.aws_credentials.AwsCredentials.reference>`: a secret key, when the
    credentials have one, is read back from the event config, never carried.
    """
    from ramp_airflow.config import load_config
    from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

    kwargs = dict(aws)
    config_path = kwargs.pop("config_path", None)
    secret = None
    if kwargs.get("access_key_id"):
        if not config_path:
            raise ValueError("a trigger reads the secret access key from the event config: give its config_path")
        secret = load_config(config_path).aws.secret_access_key
    return RampEc2Hook(**kwargs, secret_access_key=secret)


class InstanceReadyTrigger(BaseTrigger):
    """
    Poll an instance until it runs with both status checks passed, it is gone, or time is up.

    Yields one event: ``{"status": "ready" | "gone" | "timeout", "instance_id", "message"}``,
    with the instance's SSH ``address`` and when it was seen ready (``ready_at``) when it is ready.
    With ``end_from_trigger`` it ends the task instead, with the address as its XCom (and ``ready_at``
    as another), or failed, saying why. Cancelled by an operator, it ends the training
    (:func:`~ramp_airflow.triggers.cancellation.cancel_training`).

    :param instance_id: the instance to watch (templated when the sensor starts here)
    :param aws: :meth:`~ramp_airflow.utils.aws_credentials.AwsCredentials.reference`
    :param poll_interval: seconds between two checks (``aws.check_status_interval_secs``)
    :param timeout_secs: how long to wait at most, from the trigger's start
    :param end_from_trigger: end the task here, without resuming it in a worker
    :param skip_when_lost: ending the task here, skip it when the instance is gone (so that another
        training attempt follows) instead of failing it
    """

    def __init__(
        self,
        instance_id: str,
        aws: dict[str, Any],
        poll_interval: float,
        timeout_secs: float,
        end_from_trigger: bool = False,
        skip_when_lost: bool = False,
    ):
        super().__init__()
        self.instance_id = instance_id
        self.aws = aws
        self.poll_interval = poll_interval
        self.timeout_secs = timeout_secs
        self.end_from_trigger = end_from_trigger
        self.skip_when_lost = skip_when_lost

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "instance_id": self.instance_id,
                "aws": self.aws,
                "poll_interval": self.poll_interval,
                "timeout_secs": self.timeout_secs,
                "end_from_trigger": self.end_from_trigger,
                "skip_when_lost": self.skip_when_lost,
            },
        )

    async def on_kill(self) -> None:
        await cancel_training(self, self.instance_id, self.aws)

    async def run(self):
        hook = ec2_hook(self.aws)
        async with hook.held_async_client():
            verdict, description = await self._wait(hook)
            address = ready = None
            if verdict == ec2_lifecycle.READY:
                ready = {ec2_lifecycle.READY_AT: ec2_lifecycle.now_stamp()}  # for the cost ledger
                # Looked up here, so that the tasks after it need no EC2 client to reach the instance.
                address = await hook.get_ssh_address_async(self.instance_id)
        if not self.end_from_trigger:
            event = {"status": verdict, "instance_id": self.instance_id, "message": description}
            yield TriggerEvent({**event, "address": address, **ready} if address else event)
        elif address:
            yield await task_success(self, address, **ready)
        elif verdict == ec2_lifecycle.GONE and self.skip_when_lost:
            self.log.warning(
                "Instance %s is gone (%s): the next attempt trains on a new one", self.instance_id, description
            )
            yield TaskSkippedEvent()
        else:
            self.log.error("%s", ec2_lifecycle.unready_error(self.instance_id, verdict, description, self.timeout_secs))
            yield TaskFailedEvent()

    async def _wait(self, hook: RampEc2Hook) -> tuple[str, str]:
        """Poll until the instance is no longer booting, or time is up: (verdict, description)."""
        deadline = time.monotonic() + self.timeout_secs
        while True:
            try:
                verdict, description = await hook.get_readiness_async(self.instance_id)
            except (ClientError, BotoCoreError, OSError) as err:
                # A throttled or dropped EC2 call: the next poll asks again, until the deadline.
                verdict, description = ec2_lifecycle.WAITING, f"EC2 did not answer ({type(err).__name__}: {err})"
            self.log.info("Instance %s: %s", self.instance_id, description)
            if verdict != ec2_lifecycle.WAITING:
                return verdict, description
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ec2_lifecycle.TIMEOUT, description
            await asyncio.sleep(min(self.poll_interval, remaining))
