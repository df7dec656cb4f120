"""A real Airflow deployment (testbench.airflow_stack) trains the bench event's new submissions."""

from __future__ import annotations

import pytest

from testbench._proc import group_members, wait_until
from testbench.airflow_stack import running_airflow
from testbench.event_config import write_event_config

FINAL = {"scored", "training_error"}


@pytest.fixture
def stack_and_db(tmp_path, postgres, fresh_ramp_db, instance, ec2):
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)
    # The stack's home (component and task logs) is kept with the test's tmp_path.
    with running_airflow(postgres, str(config), extra_env=ec2.env, home=str(tmp_path / "airflow")) as stack:
        yield stack, fresh_ramp_db
    assert not any(group_members(pid) for pid in stack.pids().values())


def states(db, ids) -> dict[int, str]:
    return dict(db.query("SELECT id, state FROM submissions WHERE id = ANY(%s)", (list(ids),)))


def test_loop_dag_trains_every_new_submission(stack_and_db):
    stack, db = stack_and_db
    event = db.event
    health = stack.health()
    assert {health[p]["status"] for p in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}

    stack.unpause(f"ramp_train_{event}")
    stack.unpause(f"ramp_train_loop_{event}")
    ids = db.submissions.values()

    def all_final():
        stack.check_alive()
        current = states(db, ids)
        return current if set(current.values()) <= FINAL else None

    final = wait_until(all_final, 300, "every new submission to be scored or to fail", 2.0)
    by_name = {name: final[i] for name, i in db.submissions.items()}
    assert by_name == {"random_forest": "scored", "error_in_fit": "training_error", "x;touch PWNED$(id)": "scored"}
    training = f"ramp_train_{event}"

    def runs_done():
        runs = stack.dag_runs(training)
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = wait_until(runs_done, 120, "the training runs to finish", 1.0)
    assert sorted(r["dag_run_id"].rsplit("_", 1)[0] for r in runs) == sorted(f"train_submission_{i:09d}" for i in ids)
    for run in runs:
        assert stack.task_states(training, run["dag_run_id"])["attempt_1.terminate_instance"] == "success"
