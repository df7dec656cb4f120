"""Wait until an event has new submissions to train, and claim them."""

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

from ramp_airflow.config import load_config
from ramp_airflow.triggers.new_submissions import NewSubmissionsTrigger
from ramp_airflow.utils.dag_ids import training_dag_id

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from ramp_airflow.hooks.ramp_database import RampDatabaseHook


class NewSubmissionsSensor(BaseSensorOperator):
    """
    Wait until the event has a submission in state ``new`` (its sandbox excepted) and room to
    train it, then claim as many as there is room for (``new`` -> ``sent_to_training``).

    Claiming in the task that waits, as it resumes, saves a task start between a submission's
    arrival and its training run. The room is ``max_concurrent_instances`` minus the event's submissions
    already ``sent_to_training`` or ``training``, so that the wait holds while the cap is reached; and
    only the submissions that fit under their team's cap count as waiting. Once the event's budget
    (``aws.budget``) is spent, there is no room.

    :param event_name: the event.
    :param max_concurrent_instances: the cap on submissions in training at once (``aws.max_concurrent_instances``).
    :param max_concurrent_per_team: the cap on one team's (``aws.max_concurrent_per_team``; None: none).
    :param postgres_conn_id: an Airflow Postgres connection to the RAMP database; wins over
        the config's settings.
    :param config_path: the event config, whose ``sqlalchemy`` settings are used without a
        connection id.
    :param deferrable: wait in the triggerer, holding no worker slot.
    :param timeout: how long to wait; with none by then the task is skipped, so that a loop run
        ends and the next one starts.
    :return: one ``{"trigger_run_id", "conf"}`` per claimed submission, ready for
        ``TriggerDagRunOperator.partial(...).expand_kwargs``.
    """

    template_fields: Sequence[str] = ("event_name",)
    ui_color = "#dbe7f3"

    def __init__(
        self,
        *,
        event_name: str,
        max_concurrent_instances: int,
        max_concurrent_per_team: int | None = None,
        postgres_conn_id: str | None = None,
        config_path: str | None = None,
        deferrable: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.event_name = event_name
        self.max_concurrent_instances = max_concurrent_instances
        self.max_concurrent_per_team = max_concurrent_per_team
        self.postgres_conn_id = postgres_conn_id
        self.config_path = config_path
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> RampDatabaseHook:
        from ramp_airflow.hooks.ramp_database import RampDatabaseHook  # slow to load: not at parse time

        database = load_config(self.config_path).database if self.config_path else None
        return RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=database)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        claimed = self.poke(context)
        if claimed.is_done:
            return claimed.xcom_value
        self.defer(trigger=self._trigger(), method_name="execute_complete")

    def poke(self, context: Context) -> PokeReturnValue:
        room = self._room()
        if room <= 0:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._claim(room))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if event and event.get("status") == "none":
            raise AirflowSkipException(f"no new submission for {self.event_name} in {self.timeout:.0f} s")
        if not event or event.get("status") != "success":
            raise AirflowException(f"waiting for new submissions of {self.event_name} failed: {event}")
        return self._claim(self._room())

    def _room(self) -> int:
        return self._trigger().room(self.hook)

    def _trigger(self) -> NewSubmissionsTrigger:
        """The wait in the triggerer; its room is this task's too (the same caps and budget)."""
        return NewSubmissionsTrigger(
            event_name=self.event_name,
            max_concurrent_instances=self.max_concurrent_instances,
            max_concurrent_per_team=self.max_concurrent_per_team,
            postgres_conn_id=self.postgres_conn_id,
            config_path=self.config_path,
            poll_interval=self.poke_interval,
            wait_secs=self.timeout,
        )

    def _claim(self, room: int) -> list[dict[str, Any]]:
        dag_id = training_dag_id(self.event_name)
        claimed = self.hook.claim_new_submissions(self.event_name, room, dag_id, self.max_concurrent_per_team)
        return [{"trigger_run_id": s["run_id"], "conf": {"submission_id": s["id"]}} for s in claimed]
