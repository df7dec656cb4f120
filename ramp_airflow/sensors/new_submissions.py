"""Wait until an event has new submissions to train."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException, BaseSensorOperator

from ramp_airflow.config import load_config
from ramp_airflow.triggers.new_submissions import NewSubmissionsTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from ramp_airflow.hooks.ramp_database import RampDatabaseHook


class NewSubmissionsSensor(BaseSensorOperator):
    """
    Succeed once the event has a submission in state ``new`` (its sandbox excepted).

    :param event_name: the event.
    :param postgres_conn_id: an Airflow Postgres connection to the RAMP database; wins over
        the config's settings.
    :param config_path: the event config, whose ``sqlalchemy`` settings are used without a
        connection id.
    :param deferrable: wait in the triggerer, holding no worker slot.
    :param timeout: how long to wait; with none by then the task is skipped, so that a loop run
        ends and the next one starts.
    """

    template_fields: Sequence[str] = ("event_name",)
    ui_color = "#dbe7f3"

    def __init__(
        self,
        *,
        event_name: str,
        postgres_conn_id: str | None = None,
        config_path: str | None = None,
        deferrable: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.event_name = event_name
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
        if self.poke(context):
            return None
        self.defer(
            trigger=NewSubmissionsTrigger(
                event_name=self.event_name,
                postgres_conn_id=self.postgres_conn_id,
                config_path=self.config_path,
                poll_interval=self.poke_interval,
                wait_secs=self.timeout,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> bool:
        return bool(self.hook.new_submissions(self.event_name))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        if event and event.get("status") == "none":
            raise AirflowSkipException(f"no new submission for {self.event_name} in {self.timeout:.0f} s")
        if not event or event.get("status") != "success":
            raise AirflowException(f"waiting for new submissions of {self.event_name} failed: {event}")
        self.log.info("%s new submission(s) for event %s", event.get("count"), self.event_name)
