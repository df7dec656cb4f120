"""
The example leaderboard DAG of an event: scheduled on the event's results Asset, it refreshes the
event's cached leaderboards with ramp-database's own ``update_leaderboards`` and
``update_all_user_leaderboards``, run by the RAMP platform's Python (``ramp.platform_python``).

Results recorded while a refresh runs are taken by the next one: Airflow queues the asset events and
starts one run for all of them.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from ramp_airflow.config import ConfigError, EventConfig, load_config
from ramp_airflow.dag_factory import bounds, config_files
from ramp_airflow.dag_factory.arguments import dag_arguments, database_arguments
from ramp_airflow.operators.leaderboards import RefreshLeaderboardsOperator
from ramp_airflow.utils.dag_ids import leaderboards_dag_id
from ramp_airflow.utils.results_asset import results_asset


def build_leaderboards_dag(config: EventConfig) -> DAG | None:
    """Build ``ramp_leaderboards_<event>`` from an event config; None when it names no ``ramp.platform_python``."""
    if config.platform_python is None:
        return None
    with DAG(
        dag_id=leaderboards_dag_id(config.event_name),
        description=f"Refresh the leaderboards of RAMP event {config.event_name} after each recorded result",
        schedule=results_asset(config.event_name),
        # One refresh at a time: the next one takes every result recorded meanwhile.
        max_active_runs=1,
        default_args=bounds.RETRIES,
        # Naming the platform's Python is the organiser's opt-in.
        is_paused_upon_creation=False,
        **dag_arguments(config, __doc__),
    ) as dag:
        RefreshLeaderboardsOperator(
            task_id="update_leaderboards",
            python=config.platform_python,
            execution_timeout=bounds.LEADERBOARDS,
            **database_arguments(config),
        )
    return dag


def leaderboard_dags(location: str | Path | None) -> dict[str, DAG]:
    """
    The leaderboard DAG of every event config (in a directory, or one file) that names its
    ``ramp.platform_python``. A broken config is skipped: the training DAG file reports it.
    """
    dags: dict[str, DAG] = {}
    for path in config_files(location) if location else []:
        try:
            dag = build_leaderboards_dag(load_config(path))
        except ConfigError:
            continue
        if dag is not None:
            dags[dag.dag_id] = dag
    return dags
