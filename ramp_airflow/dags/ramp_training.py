"""
RAMP training: for every event config in $RAMP_AIRFLOW_CONFIG_DIR (each *.yml / *.yaml), the
DAG ramp_train_<event> (one run trains one submission), ramp_train_loop_<event> (trains every
new submission) and ramp_housekeeping_<event> (sets right what no run owns). A broken config file is
reported as an import error naming its file and fields.
"""

import os

from ramp_airflow.dag_factory import dags_from_configs

globals().update(dags_from_configs(os.environ.get("RAMP_AIRFLOW_CONFIG_DIR")))
