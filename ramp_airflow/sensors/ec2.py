"""Wait until a launched instance is ready to train on."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, BaseSensorOperator, PokeReturnValue

from ramp_airflow.triggers.ec2 import InstanceReadyTrigger
from ramp_airflow.utils import ec2_lifecycle
from ramp_airflow.utils.ec2_mixins import RampEc2HookMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


class InstanceReadySensor(RampEc2HookMixin, BaseSensorOperator):
    """
    Wait until an instance is running with its status checks passed; push its SSH address.

    Fails at once, saying so, when the instance is stopped or terminated meanwhile
    (a reclaimed spot instance, someone in the console).

    :param instance_id: the instance (templated), usually the launch task's XCom
    :param deferrable: wait in the triggerer, holding no worker slot
    :param poke_interval: seconds between checks (``aws.check_status_interval_secs``)
    :param timeout: seconds to wait at most (``aws.instance_ready_timeout_secs``)
    """

    template_fields: Sequence[str] = ("instance_id",)
    ui_color = "#f9c915"

    def __init__(
        self,
        *,
        instance_id: str,
        deferrable: bool = True,
        poke_interval: float = 5,
        timeout: float = 900,
        **kwargs,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.instance_id = instance_id
        self.deferrable = deferrable

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context=context)
        self.defer(
            trigger=InstanceReadyTrigger(
                instance_id=self.instance_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                aws_params=self.aws_params,
            ),
            method_name="execute_complete",
            # A hard bound in case the triggerer itself stalls; the trigger times out first.
            timeout=timedelta(seconds=self.timeout + self.poke_interval),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        verdict, description = self.hook.get_readiness(self.instance_id)
        self.log.info("Instance %s: %s", self.instance_id, description)
        return self._outcome(verdict, description)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if not event or event.get("instance_id") != self.instance_id:
            raise AirflowException(f"Unexpected event while waiting for instance {self.instance_id}: {event!r}")
        return self._outcome(event["status"], event["message"], event.get("address")).xcom_value

    def _outcome(self, verdict: str, description: str, address: str | None = None) -> PokeReturnValue | bool:
        error = ec2_lifecycle.unready_error(self.instance_id, verdict, description, self.timeout)
        if error:
            raise AirflowException(error)
        if verdict != ec2_lifecycle.READY:
            return False
        return PokeReturnValue(is_done=True, xcom_value=address or self.hook.get_ssh_address(self.instance_id))
