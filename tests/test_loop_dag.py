"""ramp_train_loop_<event>: claims new submissions once each and starts one training run per submission."""

from __future__ import annotations

import pytest

from testbench.event_config import write_event_config

SHELL = "x;touch PWNED$(id)"  # the seeded submission whose name is shell code


@pytest.fixture
def loop_dag(tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch):
    """Build the bench event's loop DAG from a config with ``aws_overrides``; its runs wait 3 s at most."""
    from ramp_airflow.dag_factory import event_dags, loop

    monkeypatch.setattr(loop, "LOOP_RUN_WAIT_SECS", 3)

    def build(**aws_overrides):
        config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2, **aws_overrides)
        monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
        return event_dags(config)[f"ramp_train_loop_{fresh_ramp_db.event}"]

    return build


@pytest.fixture
def loop(loop_dag):
    return loop_dag()


def training_runs(dag_id: str) -> list[tuple[str, dict]]:
    from airflow.models.dagrun import DagRun

    return sorted((run.run_id, run.conf) for run in DagRun.find(dag_id=dag_id))


def test_loop_claims_each_new_submission_once(loop, fresh_ramp_db):
    training_dag_id = f"ramp_train_{fresh_ramp_db.event}"
    before = training_runs(training_dag_id)
    new = sorted(fresh_ramp_db.submissions.values())

    first = loop.test()
    assert first.state == "success"
    started = [run for run in training_runs(training_dag_id) if run not in before]
    assert started == [(f"train_submission_{i:09d}", {"submission_id": i}) for i in new]
    claimed = fresh_ramp_db.query(
        "SELECT id, state, queue_position FROM submissions WHERE id = ANY(%s) ORDER BY id", (new,)
    )
    assert [(i, s) for i, s, _ in claimed] == [(i, "sent_to_training") for i in new]
    sandboxes = fresh_ramp_db.query("SELECT state FROM submissions WHERE id = ANY(%s)", (fresh_ramp_db.sandbox_ids,))
    assert sandboxes == [("new",)] * len(fresh_ramp_db.sandbox_ids)

    second = loop.test()
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["wait_for_new_submissions"] == "skipped"
    assert [run for run in training_runs(training_dag_id) if run not in before] == started


def test_loop_claims_no_more_than_the_cap_leaves_room_for(loop_dag, fresh_ramp_db):
    """With max_concurrent_instances 2 and one submission in training, one more is claimed, then none."""
    db = fresh_ramp_db
    loop = loop_dag(max_concurrent_instances=2)
    db.query("UPDATE submissions SET state = 'training' WHERE id = %s", (db.submissions["random_forest"],))

    def state(name: str) -> str:
        return db.query("SELECT state FROM submissions WHERE id = %s", (db.submissions[name],))[0][0]

    first = loop.test()
    assert first.state == "success"
    assert (state("error_in_fit"), state(SHELL)) == ("sent_to_training", "new")  # the oldest, alone

    second = loop.test()  # two in flight: the wait holds until the run's time is up, and claims nothing
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["wait_for_new_submissions"] == "skipped"
    assert state(SHELL) == "new"
