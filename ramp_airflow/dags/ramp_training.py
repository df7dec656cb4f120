"""
RAMP training: for every event config in $RAMP_AIRFLOW_CONFIG_DIR (each *.yml / *.yaml), the
DAG ramp_train_<event> (one run trains one submission), ramp_train_loop_<event> (trains every
new submission) and ramp_housekeeping_<event> (sets right what no run owns). A broken config file is
reported as an import error naming its file and fields.
"""

import os

from airflow.sdk import get_parsing_context

from ramp_airflow.dag_factory import dags_from_configs

# A task's start parses this file for its own DAG alone (Airflow's parsing context): no other is built.
globals().update(dags_from_configs(os.environ.get("RAMP_AIRFLOW_CONFIG_DIR"), only=get_parsing_context().dag_id))
