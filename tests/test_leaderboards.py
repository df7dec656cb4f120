"""The results Asset of an event, and the example leaderboard DAG scheduled on it, on the bench."""

from __future__ import annotations

import json
import shutil

import pytest
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.renderedtifields import RenderedTaskInstanceFields
from airflow.utils.session import create_session
from sqlalchemy import select

from testbench.event_config import write_event_config
from testbench.ramp_database import RAMP_PYTHON
from testbench.training_runs import task_states

DAGS_FOLDER = "ramp_airflow/dags"


@pytest.fixture
def event(tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch):
    """The bench event's config naming the RAMP platform's python, and its DAGs."""
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2, platform_python=RAMP_PYTHON)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    from ramp_airflow.config import load_config
    from ramp_airflow.dag_factory import event_dags
    from ramp_airflow.dag_factory.leaderboards import leaderboard_dags

    class Event:
        db = fresh_ramp_db
        path = config
        database = load_config(config).database
        training = event_dags(config)[f"ramp_train_{fresh_ramp_db.event}"]
        leaderboards = leaderboard_dags(config)[f"ramp_leaderboards_{fresh_ramp_db.event}"]
        uri = f"x-ramp://{fresh_ramp_db.event}/results"

        @staticmethod
        def asset_events(dag_run) -> list[AssetEvent]:
            """The asset events of the event's results Asset that one run emitted."""
            with create_session() as session:
                return list(
                    session.scalars(
                        select(AssetEvent)
                        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                        .where(AssetModel.uri == Event.uri, AssetEvent.source_run_id == dag_run.run_id)
                    )
                )

        @staticmethod
        def team_leaderboard(team: str) -> str | None:
            ((html,),) = fresh_ramp_db.query(
                "SELECT et.leaderboard_html FROM event_teams et JOIN teams t ON t.id = et.team_id "
                "JOIN events e ON e.id = et.event_id WHERE t.name = %s AND e.name = %s",
                (team, fresh_ramp_db.event),
            )
            return html

        @staticmethod
        def public_leaderboard() -> str | None:
            ((html,),) = fresh_ramp_db.query(
                "SELECT public_leaderboard_html_no_links FROM events WHERE name = %s", (fresh_ramp_db.event,)
            )
            return html

    return Event


def test_a_scored_submission_emits_its_result_and_reaches_the_leaderboards(event, capfd):
    submission_id = event.db.submissions["random_forest"]
    assert "random_forest" not in (event.public_leaderboard() or "")
    dag_run = event.training.test(run_conf={"submission_id": submission_id})
    assert dag_run.state == "success", task_states(dag_run)

    (asset_event,) = event.asset_events(dag_run)
    assert asset_event.source_task_id == "record_results"
    ((valid, test),) = event.db.query(
        "SELECT ss.valid_score_cv_bag, ss.test_score_cv_bag FROM submission_scores ss "
        "JOIN event_score_types est ON est.id = ss.event_score_type_id "
        "WHERE ss.submission_id = %s AND est.name = 'acc'",
        (submission_id,),
    )
    assert asset_event.extra == {
        "submission_id": submission_id,
        "team": "test_user",
        "name": "random_forest",
        "state": "scored",
        "official_score": {"name": "acc", "valid": valid, "test": test},
    }
    assert 0 < valid <= 1

    refresh = event.leaderboards.test()
    assert refresh.state == "success", task_states(refresh)
    assert "random_forest" in event.public_leaderboard()
    assert "random_forest" in event.team_leaderboard("test_user")
    assert "random_forest" not in (event.team_leaderboard("test_user_2") or "")
    # The password reached ramp-database through the environment only: not in what Airflow renders
    # for the task, nor in its log.
    password = event.database.password
    with create_session() as session:
        (rendered,) = session.scalars(
            select(RenderedTaskInstanceFields.rendered_fields).where(
                RenderedTaskInstanceFields.dag_id == event.leaderboards.dag_id,
                RenderedTaskInstanceFields.run_id == refresh.run_id,
            )
        )
    assert event.db.event in json.dumps(rendered) and password not in json.dumps(rendered)
    assert password not in "".join(capfd.readouterr())


def test_a_training_error_emits_its_state_and_no_score(event):
    submission_id = event.db.submissions["error_in_fit"]
    dag_run = event.training.test(run_conf={"submission_id": submission_id})
    assert dag_run.state == "success", task_states(dag_run)

    (asset_event,) = event.asset_events(dag_run)
    assert asset_event.extra == {
        "submission_id": submission_id,
        "team": "test_user",
        "name": "error_in_fit",
        "state": "training_error",
        "official_score": None,
    }


def test_a_run_that_records_nothing_emits_nothing(event):
    """A run whose claim is refused never reaches its recording: no asset event, so no leaderboard refresh."""
    dag_run = event.training.test(run_conf={"submission_id": event.db.sandbox_ids[0]})
    states = task_states(dag_run)
    assert states["claim_submission"] == "failed" and states["record_results"] == "upstream_failed"
    assert event.asset_events(dag_run) == []


def test_the_dag_file_builds_a_leaderboard_dag_per_config_naming_the_platform_python(
    tmp_path, ramp_db, instance, ec2, airflow_home, monkeypatch
):
    from airflow.dag_processing.dagbag import DagBag

    from ramp_airflow.utils.results_asset import results_asset

    write_event_config(tmp_path / "iris.yml", ramp_db, instance, ec2, platform_python=RAMP_PYTHON)
    other = write_event_config(tmp_path / "other.yml", ramp_db, instance, ec2)
    other.write_text(other.read_text().replace(f"event_name: {ramp_db.event}", "event_name: other"))
    broken = tmp_path / "broken.yml"
    shutil.copy(tmp_path / "iris.yml", broken)
    broken.write_text(broken.read_text().replace(f"event_name: {ramp_db.event}", "event_nam: broken"))
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(tmp_path))

    bag = DagBag(dag_folder=DAGS_FOLDER)
    assert [d for d in bag.dag_ids if d.startswith("ramp_leaderboards_")] == [f"ramp_leaderboards_{ramp_db.event}"]
    assert "ramp_train_other" in bag.dag_ids  # its config names no platform_python: no leaderboard DAG
    dag = bag.get_dag(f"ramp_leaderboards_{ramp_db.event}")
    assert dag.timetable.asset_condition == results_asset(ramp_db.event)
    assert dag.get_task("update_leaderboards").python == RAMP_PYTHON
    (error,) = bag.import_errors.values()  # reported once, by the training DAG file
    assert f"{broken}: ramp.event_nam: unknown field" in error


def test_results_asset_and_its_extra():
    from ramp_airflow.utils.results_asset import results_asset, results_extra

    assert results_asset("Iris.v2-b").uri == "x-ramp://Iris.v2-b/results"  # taken as it is
    submission = {"id": 7, "team": "alice", "name": "x;rm -rf $(id)", "state": "training"}
    score = {"name": "acc", "valid": float("nan"), "test": float("inf")}
    extra = results_extra(submission, "scored", score)
    assert extra["official_score"] == {"name": "acc", "valid": None, "test": None}
    json.dumps(extra, allow_nan=False)  # the metadata database's JSON takes no NaN
    assert results_extra(submission, "training_error", None) == {
        "submission_id": 7,
        "team": "alice",
        "name": "x;rm -rf $(id)",
        "state": "training_error",
        "official_score": None,
    }
