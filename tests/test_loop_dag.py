"""ramp_train_loop_<event>: claims new submissions once each and starts one training run per submission."""

from __future__ import annotations

import pytest

from testbench.event_config import write_event_config


@pytest.fixture
def loop(tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch):
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    from ramp_airflow.dag_factory import event_dags

    return event_dags(config)[f"ramp_train_loop_{fresh_ramp_db.event}"]


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
