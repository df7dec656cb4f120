"""Refresh an event's cached leaderboards with ramp-database itself, in the RAMP platform's virtualenv."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import mask_secret
from airflow.providers.standard.operators.python import ExternalPythonOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from ramp_airflow.config import DatabaseSettings

# The database password reaches the platform's process through its environment only: never through
# the task's arguments, which Airflow renders in its UI.
PASSWORD_VARIABLE = "RAMP_DATABASE_PASSWORD"
# What the platform's process gets of Airflow's environment: enough to run, none of Airflow's settings
# or secrets, and no PYTHONPATH that would mix Airflow's packages into ramp-database's.
PASSED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
# SQLAlchemy's name of PostgreSQL, for a connection id (an Airflow connection says "postgres").
POSTGRESQL = "postgresql"


def update_event_leaderboards(event_name: str, database: dict, password_variable: str) -> None:
    """
    ramp-database's own refresh of an event's leaderboards and of each of its teams'.

    Runs in the RAMP platform's virtualenv: ExternalPythonOperator copies this function's source, so
    it imports all it needs itself.

    :param event_name: ``events.name``.
    :param database: ramp-database's ``sqlalchemy`` settings, without the password.
    :param password_variable: the environment variable that holds the password.
    """
    import os

    from ramp_database.tools.leaderboard import update_all_user_leaderboards, update_leaderboards
    from ramp_database.utils import session_scope

    with session_scope({**database, "password": os.environ.get(password_variable) or None}) as session:
        update_leaderboards(session, event_name)
        update_all_user_leaderboards(session, event_name)


class RefreshLeaderboardsOperator(ExternalPythonOperator):
    """
    Rebuild the event's cached leaderboard HTML (``events.*_leaderboard_html`` and each
    ``event_teams.leaderboard_html``) with ramp-database's ``update_leaderboards`` and
    ``update_all_user_leaderboards``, run by the RAMP platform's own Python: ramp-database needs
    SQLAlchemy 1.4 and numpy 1, and reads the event's kit through ramp-workflow.

    :param event_name: the event.
    :param python: the RAMP platform's virtualenv's ``python`` (``ramp.platform_python``).
    :param postgres_conn_id: an Airflow Postgres connection to the RAMP database; wins over ``database``.
    :param database: the event config's ``sqlalchemy`` settings, used without a connection id.
    """

    ui_color = "#dbe7f3"

    def __init__(
        self,
        *,
        event_name: str,
        python: str,
        postgres_conn_id: str | None = None,
        database: DatabaseSettings | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            python=python,
            python_callable=update_event_leaderboards,
            op_kwargs={"event_name": event_name},
            expect_airflow=False,
            inherit_env=False,
            **kwargs,
        )
        self.event_name = event_name
        self.postgres_conn_id = postgres_conn_id
        self.database = database

    def execute(self, context: Context) -> Any:
        # Resolved here, on the worker: a connection id is looked up at run time, as every task does.
        from ramp_airflow.hooks.ramp_database import RampDatabaseHook

        conn = RampDatabaseHook(postgres_conn_id=self.postgres_conn_id, database=self.database).connection
        if conn.password:
            mask_secret(conn.password)
        self.op_kwargs = {
            **self.op_kwargs,
            "database": {
                "drivername": self.database.drivername if self.database else POSTGRESQL,
                "username": conn.login,
                "host": conn.host,
                "port": conn.port,
                "database": conn.schema,
            },
            "password_variable": PASSWORD_VARIABLE,
        }
        passed = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
        self.env_vars = {**passed, PASSWORD_VARIABLE: conn.password or ""}
        return super().execute(context)

    def _iter_serializable_context_keys(self):
        # The function takes no context: the plain keys are enough, and this spares probing the
        # platform's Python for pendulum, whose failure prints a confusing traceback in the task's log.
        return iter(self.BASE_SERIALIZABLE_CONTEXT_KEYS)
