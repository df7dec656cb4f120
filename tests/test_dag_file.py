"""The DAG file: every config in RAMP_AIRFLOW_CONFIG_DIR gives two DAGs; a broken one an import error."""

from __future__ import annotations

import shutil

from testbench.event_config import write_event_config

DAGS_FOLDER = "ramp_airflow/dags"


def test_broken_config_is_an_import_error_and_others_load(tmp_path, ramp_db, instance, ec2, airflow_home, monkeypatch):
    write_event_config(tmp_path / "iris.yml", ramp_db, instance, ec2)
    broken = tmp_path / "broken.yaml"
    shutil.copy(tmp_path / "iris.yml", broken)
    broken.write_text(broken.read_text().replace("instance_type:", "instance_typ:").replace(ramp_db.event, "other"))
    (tmp_path / "notes.txt").write_text("not a config")
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS_FOLDER)
    assert sorted(bag.dag_ids) == [
        f"ramp_housekeeping_{ramp_db.event}",
        f"ramp_train_{ramp_db.event}",
        f"ramp_train_loop_{ramp_db.event}",
    ]
    (error,) = bag.import_errors.values()
    assert f"{broken}: aws.instance_typ: unknown field (did you mean 'instance_type'?)" in error
    assert f"{broken}: aws.instance_type: missing required field" in error


def test_a_task_start_builds_its_own_dag_alone(tmp_path, ramp_db, instance, ec2, airflow_home, monkeypatch):
    """Parsed as a task's start parses it (Airflow's parsing context), the file builds that task's DAG only."""
    iris = write_event_config(tmp_path / "iris.yml", ramp_db, instance, ec2)
    (tmp_path / "other.yml").write_text(iris.read_text().replace(ramp_db.event, "other"))
    (tmp_path / "broken.yaml").write_text(iris.read_text().replace("instance_type:", "instance_typ:"))
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID

    def parsed_for(dag_id: str) -> DagBag:
        # As the task runner sets it around its parse; Airflow's own context manager leaves it set.
        monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, dag_id)
        return DagBag(dag_folder=DAGS_FOLDER)

    bag = parsed_for("ramp_train_loop_other")
    assert bag.dag_ids == ["ramp_train_loop_other"] and bag.import_errors == {}
    assert parsed_for(f"ramp_train_{ramp_db.event}").dag_ids == [f"ramp_train_{ramp_db.event}"]
    # A DAG no valid config makes (its config broken since): everything, the import error included.
    bag = parsed_for("ramp_train_gone")
    assert len(bag.dag_ids) == 6 and len(bag.import_errors) == 1


def test_no_config_dir_means_no_dags(monkeypatch, airflow_home):
    monkeypatch.delenv("RAMP_AIRFLOW_CONFIG_DIR", raising=False)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS_FOLDER)
    assert bag.dag_ids == [] and bag.import_errors == {}


def test_every_task_has_a_time_bound(tmp_path, ramp_db, instance, ec2, airflow_home, monkeypatch):
    """No run can last forever: each task ends by its bound (the organiser set no timeout here)."""
    from airflow.sdk import BaseSensorOperator

    from ramp_airflow.dag_factory import event_dags

    hooks = {moment: "true" for moment in ("start_training", "successful_training", "failed_training")}
    config = write_event_config(tmp_path / "iris.yml", ramp_db, instance, ec2, training_timeout_secs=None, hooks=hooks)
    bounded = []
    for dag in event_dags(config).values():
        for task in dag.tasks:
            bound = task.timeout if isinstance(task, BaseSensorOperator) else task.execution_timeout
            assert bound, f"{dag.dag_id}.{task.task_id} has no time bound"
            bounded.append(task.task_id)
    assert {
        "hook_failed_training",
        "trigger_training",
        "restart_training",
        "sweep_orphan_instances",
        "stop_disowned_instances",
    } <= set(bounded)
    training = event_dags(config)[f"ramp_train_{ramp_db.event}"]
    assert training.dagrun_timeout is None  # it would skip the teardown: see dag_factory/bounds.py
    # The default training time limit (ramp-engine's 7200 s) bounds the training's wait.
    assert training.get_task("attempt_1.wait_for_training").timeout == 7200 + 600
