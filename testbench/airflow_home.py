"""A throwaway AIRFLOW_HOME whose metadata database lives in the bench cluster.

Airflow reads its configuration when ``airflow`` is first imported, so the
environment must be in place before any test module imports it: the conftest
calls :func:`plan` at import time (it only picks a temp dir and a port and sets
environment variables; nothing starts), and the ``airflow_home`` fixture later
creates the database and runs ``airflow db migrate`` once.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from testbench._proc import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGS_FOLDER = os.path.join(REPO, "dags")
AIRFLOW_DB = "airflow"


@dataclasses.dataclass
class AirflowPlan:
    """Where the session's Airflow home and PostgreSQL cluster will be."""

    home: str
    pg_port: int
    pg_password: str
    sql_alchemy_conn: str
    env: dict

    def cleanup(self) -> None:
        # RAMP_BENCH_KEEP_LOGS=1 keeps the home, task logs included, to read after a failed run.
        if os.environ.get("RAMP_BENCH_KEEP_LOGS") != "1":
            shutil.rmtree(self.home, ignore_errors=True)


def plan(pg_user: str = "bench") -> AirflowPlan:
    """Choose paths/port/password and export Airflow's env vars (nothing runs)."""
    home = tempfile.mkdtemp(prefix="bench-airflow-")
    port, password = free_port(), secrets.token_hex(12)
    conn = f"postgresql+psycopg2://{pg_user}:{password}@127.0.0.1:{port}/{AIRFLOW_DB}"
    env = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": DAGS_FOLDER,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": os.path.join(home, "logs"),
        # No usage data collection: the bench is offline.
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    }
    os.environ.update(env)
    return AirflowPlan(home=home, pg_port=port, pg_password=password, sql_alchemy_conn=conn, env=env)


def migrate(the_plan: AirflowPlan, cluster, timeout: float = 600) -> None:
    """Create the ``airflow`` database in ``cluster`` and run ``airflow db migrate``."""
    cluster.create_database(AIRFLOW_DB)
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    env = dict(os.environ, **the_plan.env)
    proc = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout, cwd=the_plan.home
    )
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stderr[-4000:]}")
