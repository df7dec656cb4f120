"""
A wait cancelled by an operator (its trigger's ``on_kill``), against moto's EC2 and the RAMP database;
tests/test_chaos.py cancels real runs through Airflow's API and triggerer.
"""

from __future__ import annotations

import asyncio
import types

from ramp_airflow.config import load_config
from ramp_airflow.dag_factory.arguments import aws_credentials
from ramp_airflow.hooks.ec2 import RampEc2Hook
from ramp_airflow.hooks.ramp_database import RampDatabaseHook, RunRef
from ramp_airflow.triggers.ec2 import InstanceReadyTrigger
from ramp_airflow.utils import cost_ledger
from ramp_airflow.utils.layout import cost_ledger_file
from testbench.event_config import write_event_config

DAG_ID, RUN_ID = "ramp_train_iris_test", "manual__cancelled"


def test_a_cancelled_wait_ends_the_training_of_its_run_only(tmp_path, fresh_ramp_db, instance, ec2):
    db = fresh_ramp_db
    config = load_config(write_event_config(tmp_path / "config.yml", db, instance, ec2))
    submission_id = db.submissions["random_forest"]
    RampDatabaseHook(database=config.database).claim_submission(submission_id, RunRef(DAG_ID, RUN_ID))
    ec2_hook = RampEc2Hook(**aws_credentials(config).hook_kwargs())
    launch = ec2.launch_args(event_name=db.event, submission_id=submission_id, dag_id=DAG_ID)
    launched = ec2_hook.launch_instance(**launch | {"run_id": RUN_ID})["instance_id"]
    # An instance of another run: an operator's own, given as the run's instance_id.
    given = ec2_hook.launch_instance(**launch)["instance_id"]

    def cancel(instance_id: str) -> None:
        trigger = InstanceReadyTrigger(
            instance_id=instance_id,
            aws=aws_credentials(config).reference(config.path),
            poll_interval=1,
            timeout_secs=60,
        )
        trigger.task_instance = types.SimpleNamespace(
            dag_id=DAG_ID, run_id=RUN_ID, task_id="attempt_1.wait_for_instance", map_index=-1
        )
        asyncio.run(trigger.on_kill())

    cancel(given)
    assert ec2_hook.describe_instance(given)["State"]["Name"] == "running"
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("sent_to_training",)]

    cancel(launched)
    assert ec2_hook.describe_instance(launched)["State"]["Name"] in ("shutting-down", "terminated")
    ((state, error_msg),) = db.query("SELECT state, error_msg FROM submissions WHERE id = %s", (submission_id,))
    assert state == "checking_error"
    assert f"Training was cancelled by an operator (its run {RUN_ID} was stopped from Airflow)." in error_msg
    (row,) = cost_ledger.read_rows(cost_ledger_file(config.aws.local_log_folder, config.event_name))
    assert (row["instance_id"], row["terminated_by"]) == (launched, "attempt_1.wait_for_instance")
    assert (row["submission_name"], row["run_id"]) == ("random_forest", RUN_ID)
