"""Decide what follows a training attempt: fetch its results, retry on a new instance, or give up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.standard.operators.branch import BaseBranchOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

# Outcomes whose instance still holds the submission's log and output, worth downloading.
_FETCHABLE = ("finished", "died", "timeout")


class TrainingOutcomeBranchOperator(BaseBranchOperator):
    """
    Follow the outcome the training-finished sensor returned.

    :param outcome: the sensor's result, e.g. ``{"outcome": "finished", "exit_code": 0}`` (templated).
    :param fetch_task_id: the task that downloads the results.
    :param retry_task_id: the next attempt's first task, or None on the last attempt.
    :param give_up_task_id: the task that records that every instance was lost.
    """

    template_fields: Sequence[str] = ("outcome",)

    def __init__(
        self,
        *,
        outcome: Any,
        fetch_task_id: str,
        retry_task_id: str | None,
        give_up_task_id: str,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.outcome = outcome
        self.fetch_task_id = fetch_task_id
        self.retry_task_id = retry_task_id
        self.give_up_task_id = give_up_task_id

    def choose_branch(self, context: Context) -> str:
        kind = (self.outcome or {}).get("outcome")
        if kind in _FETCHABLE:
            return self.fetch_task_id
        if kind == "lost":
            if self.retry_task_id:
                self.log.warning("The instance was lost during training: retrying on a new instance")
                return self.retry_task_id
            self.log.error("The instance was lost during training, and no attempt is left")
            return self.give_up_task_id
        raise AirflowException(f"the training-finished sensor returned an unknown outcome: {self.outcome!r}")
