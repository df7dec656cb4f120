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
    assert sorted(bag.dag_ids) == [f"ramp_train_{ramp_db.event}", f"ramp_train_loop_{ramp_db.event}"]
    (error,) = bag.import_errors.values()
    assert f"{broken}: aws.instance_typ: unknown field (did you mean 'instance_type'?)" in error
    assert f"{broken}: aws.instance_type: missing required field" in error


def test_no_config_dir_means_no_dags(monkeypatch, airflow_home):
    monkeypatch.delenv("RAMP_AIRFLOW_CONFIG_DIR", raising=False)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS_FOLDER)
    assert bag.dag_ids == [] and bag.import_errors == {}
