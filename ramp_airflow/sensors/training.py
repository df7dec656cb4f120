"""Wait for a submission's training to end on its instance."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin
from ramp_airflow.utils.training_wait_mixin import WAIT_TEMPLATE_FIELDS, TrainingWaitMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook


class TrainingFinishedSensor(TrainingWaitMixin, InstanceMixin, BaseSensorOperator):
    """
    Wait until the training started by RsyncTrainOperator ends, copying its log as it grows.

    The outcome, the fetch of the results and what a lost instance does: see
    :class:`~ramp_airflow.utils.training_wait_mixin.TrainingWaitMixin`. The instance and how to
    log in: see :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin`.

    :param poke_interval: seconds between polls (``check_finished_training_interval_secs``); deferred,
        each poll waits on the instance up to that long for the end, which is seen within a second
    :param deferrable: wait in the triggerer rather than in a worker slot
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, *WAIT_TEMPLATE_FIELDS)

    def __init__(self, *, poke_interval: float = 10.0, deferrable: bool = True, **kwargs):
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> InstanceSSHHook:
        return self.instance_hook()

    def execute(self, context: Context) -> Any:
        self.hook  # noqa: B018 -- fails here, before waiting, without the pinned host key
        if not self.deferrable:
            return super().execute(context=context)
        self.defer(trigger=self.training_trigger(self.poke_interval, self.host_key), method_name="execute_complete")

    def poke(self, context: Context) -> PokeReturnValue:
        outcome = self.poll_training(self.hook)
        if outcome is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self.conclude(outcome, self.hook))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        return self.conclude(self.outcome_of(event), self.hook)
