"""Wait, in the triggerer, until an event has new submissions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ramp_airflow.config import load_config
from ramp_airflow.utils.budget import exhausted_budget


class NewSubmissionsTrigger(BaseTrigger):
    """
    Poll the RAMP database until the event has a submission ready to train, room for it, and budget
    left (``aws.budget``, against the event's cost ledger).

    :param event_name: the event.
    :param max_concurrent_instances: the cap on the event's submissions ``sent_to_training`` or ``training``
        (``aws.max_concurrent_instances``).
    :param max_concurrent_per_team: the cap on one team's (``aws.max_concurrent_per_team``; None: none).
    :param postgres_conn_id: an Airflow Postgres connection to the RAMP database.
    :param config_path: the event config whose ``sqlalchemy`` settings to use without a connection
        id. A path rather than the settings, because trigger arguments are stored in Airflow's
        database and the settings hold a password.
    :param poll_interval: seconds between two looks.
    :param wait_secs: after this long with nothing new, the event says so (status ``none``).
    """

    def __init__(
        self,
        event_name: str,
        max_concurrent_instances: int,
        max_concurrent_per_team: int | None = None,
        postgres_conn_id: str | None = None,
        config_path: str | None = None,
        poll_interval: float = 2,
        wait_secs: float = 3600,
    ):
        super().__init__()
        self.event_name = event_name
        self.max_concurrent_instances = max_concurrent_instances
        self.max_concurrent_per_team = max_concurrent_per_team
        self.postgres_conn_id = postgres_conn_id
        self.config_path = config_path
        self.poll_interval = poll_interval
        self.wait_secs = wait_secs

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "event_name": self.event_name,
                "max_concurrent_instances": self.max_concurrent_instances,
                "max_concurrent_per_team": self.max_concurrent_per_team,
                "postgres_conn_id": self.postgres_conn_id,
                "config_path": self.config_path,
                "poll_interval": self.poll_interval,
                "wait_secs": self.wait_secs,
            },
        )

    async def run(self):
        from ramp_airflow.hooks.ramp_database import RampDatabaseHook  # slow to load: not at parse time

        database = load_config(self.config_path).database if self.config_path else None
        hook = RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=database)
        deadline = time.monotonic() + self.wait_secs
        while True:
            # The database driver blocks; a thread keeps the triggerer's event loop free.
            room = await asyncio.to_thread(self.room, hook)
            if room > 0:
                yield TriggerEvent({"status": "success", "count": room})
                return
            if time.monotonic() + self.poll_interval > deadline:
                yield TriggerEvent({"status": "none"})
                return
            self.log.info("No new submission for event %s, or no room or budget for one", self.event_name)
            await asyncio.sleep(self.poll_interval)

    def room(self, hook) -> int:
        """How many submissions may be claimed now: none once the event's budget is spent."""
        spent = exhausted_budget(self.config_path)
        if spent is not None:
            self.log.warning("Claiming nothing for event %s: its budget is spent (%s)", self.event_name, spent)
            return 0
        return hook.room_for_training(self.event_name, self.max_concurrent_instances, self.max_concurrent_per_team)
