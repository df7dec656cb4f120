"""
RAMP leaderboards, an example of a DAG scheduled on ramp-airflow's results Assets: for every event
config in $RAMP_AIRFLOW_CONFIG_DIR that names ramp.platform_python, the DAG ramp_leaderboards_<event>
refreshes the event's leaderboards each time a training run records a result
(the Asset x-ramp://<event>/results). Broken configs are reported by ramp_training.py.
"""

import os

from ramp_airflow.dag_factory.leaderboards import leaderboard_dags

globals().update(leaderboard_dags(os.environ.get("RAMP_AIRFLOW_CONFIG_DIR")))
