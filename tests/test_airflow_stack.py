"""A real Airflow deployment (testbench.airflow_stack) trains the bench event's new submissions."""

from __future__ import annotations

import pytest

from testbench._proc import group_members
from testbench.airflow_stack import running_airflow
from testbench.event_config import write_event_config
from testbench.stack_loop import SEEDED_OUTCOMES, train_new_submissions


@pytest.fixture
def stack_and_db(tmp_path, postgres, fresh_ramp_db, instance, ec2):
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)
    # The stack's home (component and task logs) is kept with the test's tmp_path.
    with running_airflow(postgres, str(config), extra_env=ec2.env, home=str(tmp_path / "airflow")) as stack:
        yield stack, fresh_ramp_db
    assert not any(group_members(pid) for pid in stack.pids().values())


def test_loop_dag_trains_every_new_submission(stack_and_db):
    stack, db = stack_and_db
    health = stack.health()
    assert {health[p]["status"] for p in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}

    outcomes, runs = train_new_submissions(stack, db)
    assert outcomes == SEEDED_OUTCOMES
    ids = db.submissions.values()
    assert sorted(r["dag_run_id"].rsplit("_", 1)[0] for r in runs) == sorted(f"train_submission_{i:09d}" for i in ids)
    training = f"ramp_train_{db.event}"
    for run in runs:
        assert stack.task_states(training, run["dag_run_id"])["attempt_1.terminate_instance"] == "success"
