"""Wait, in the triggerer, until an instance is ready to train on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ramp_airflow.utils import ec2_lifecycle


class InstanceReadyTrigger(BaseTrigger):
    """
    Poll an instance until it runs with both status checks passed, it is gone, or time is up.

    Yields one event: ``{"status": "ready" | "gone" | "timeout", "instance_id", "message"}``,
    with the instance's SSH ``address`` when it is ready.

    :param instance_id: the instance to watch
    :param poll_interval: seconds between two checks (``aws.check_status_interval_secs``)
    :param deadline: a UNIX time after which to give up; absolute, so that a restarted
        triggerer keeps the same bound
    :param aws_params: :class:`~ramp_airflow.hooks.ec2.RampEc2Hook` keyword arguments
        (Airflow stores trigger arguments encrypted)
    """

    def __init__(self, instance_id: str, poll_interval: float, deadline: float, aws_params: dict[str, Any]):
        super().__init__()
        self.instance_id = instance_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.aws_params = aws_params

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "ramp_airflow.triggers.ec2.InstanceReadyTrigger",
            {
                "instance_id": self.instance_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "aws_params": self.aws_params,
            },
        )

    def __repr__(self) -> str:
        # The triggerer logs triggers by their repr: keep the secret key out of it.
        classpath, kwargs = self.serialize()
        if kwargs["aws_params"].get("secret_access_key"):
            kwargs["aws_params"] = {**kwargs["aws_params"], "secret_access_key": "***"}
        return self.repr(classpath, kwargs)

    async def run(self):
        from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

        hook = RampEc2Hook(**self.aws_params)
        while True:
            verdict, description = await hook.get_readiness_async(self.instance_id)
            self.log.info("Instance %s: %s", self.instance_id, description)
            if verdict != ec2_lifecycle.WAITING:
                break
            remaining = self.deadline - time.time()
            if remaining <= 0:
                verdict = ec2_lifecycle.TIMEOUT
                break
            await asyncio.sleep(min(self.poll_interval, remaining))
        event = {"status": verdict, "instance_id": self.instance_id, "message": description}
        if verdict == ec2_lifecycle.READY:
            # Looked up here, the resumed task needs no EC2 client of its own: its start is billed.
            event["address"] = await hook.get_ssh_address_async(self.instance_id)
        yield TriggerEvent(event)
