"""Full training runs of ramp_train_<event> through real Airflow (dag.test) on the bench."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import select

from ramp_airflow.utils import billing, cost_ledger
from testbench.event_config import write_event_config
from testbench.training_runs import instances_of, task_states

# A hook command that appends the RAMP_AWS_* variables it sees to the file named by its argument.
DUMP_HOOK_ENV = """\
import json, os, sys
with open(sys.argv[1], "a") as log:
    print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("RAMP_AWS_")}), file=log)
"""


@pytest.fixture
def event(tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch):
    """The bench event's config, its DAGs, and what the hooks saw."""
    hook_log = tmp_path / "hooks.jsonl"
    script = tmp_path / "dump_hook_env.py"
    script.write_text(DUMP_HOOK_ENV)
    dump_env = f"python3 {script} {hook_log}"
    config = write_event_config(
        tmp_path / "config.yml",
        fresh_ramp_db,
        instance,
        ec2,
        hooks={"start_training": dump_env, "after_sucessful_training": dump_env, "failed_training": [dump_env]},
    )
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    from ramp_airflow.dag_factory import event_dags

    class Event:
        db = fresh_ramp_db
        dags = event_dags(config)
        training = dags[f"ramp_train_{fresh_ramp_db.event}"]
        loop = dags[f"ramp_train_loop_{fresh_ramp_db.event}"]
        predictions = tmp_path / "predictions"
        logs = tmp_path / "logs"
        path = config

        @staticmethod
        def ledger_rows() -> list[dict]:
            return cost_ledger.read_rows(str(tmp_path / "logs" / f"{fresh_ramp_db.event}_cost_ledger.csv"))

        @staticmethod
        def hooks() -> list[dict]:
            return [json.loads(line) for line in hook_log.read_text().splitlines()] if hook_log.exists() else []

        @staticmethod
        def submission(submission_id: int) -> dict:
            (row,) = fresh_ramp_db.query(
                "SELECT state, error_msg, max_ram, queue_position FROM submissions WHERE id = %s", (submission_id,)
            )
            return dict(zip(("state", "error_msg", "max_ram", "queue_position"), row))

    return Event


def test_good_submission_is_scored(event, ec2, capfd):
    submission_id = event.db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    dag_run = event.training.test(run_conf={"submission_id": submission_id})

    states = task_states(dag_run)
    assert dag_run.state == "success", " ".join(f"{k}={v}" for k, v in sorted(states.items()))
    assert event.submission(submission_id)["state"] == "scored"
    assert event.submission(submission_id)["max_ram"] > 0
    scores = event.db.query(
        "SELECT f.valid_score FROM submission_score_on_cv_folds f JOIN submission_on_cv_folds c "
        "ON c.id = f.submission_on_cv_fold_id WHERE c.submission_id = %s",
        (submission_id,),
    )
    assert len(scores) == 2 * 3 and all(s is not None for (s,) in scores)
    folder = f"submission_{submission_id:09d}"
    assert (event.predictions / folder / "fold_0" / "y_pred_test.npz").exists()
    assert (event.logs / folder / "log").exists() and (event.logs / folder / "mprof.dat").exists()
    assert states["hook_failed_training"] == "skipped"
    assert [h["RAMP_AWS_HOOK"] for h in event.hooks()] == ["start_training", "successful_training"]
    assert event.hooks()[1] == {
        "RAMP_AWS_SUBMISSION_ID": str(submission_id),
        "RAMP_AWS_SUBMISSION_NAME": "random_forest",
        "RAMP_AWS_EVENT": event.db.event,
        "RAMP_AWS_TEAM": event.hooks()[1]["RAMP_AWS_TEAM"],
        "RAMP_AWS_HOOK": "successful_training",
        "RAMP_AWS_SUBMISSION_FOLDER": str(event.logs / folder),
    }
    # The instance this run launched is gone; attempt 2 never ran.
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]
    assert states["attempt_2.launch_instance"] == "skipped"
    check_ledger_and_summary(event, dag_run, list(instances_of(ec2, submission_id, earlier)), capfd)


def check_ledger_and_summary(event, dag_run, instance_ids: list[str], capfd) -> None:
    """One ledger row for the run's instance, its summary in the run's last task log, cost-report reading it."""
    (entry,) = event.ledger_rows()
    team, submission_id = event.hooks()[1]["RAMP_AWS_TEAM"], event.hooks()[1]["RAMP_AWS_SUBMISSION_ID"]
    assert [entry["instance_id"]] == instance_ids and entry["run_id"] == dag_run.run_id
    assert (entry["submission_id"], entry["team"], entry["submission_name"]) == (submission_id, team, "random_forest")
    assert (entry["launched_by"], entry["terminated_by"]) == (
        "attempt_1.launch_instance",
        "attempt_1.terminate_instance",
    )
    assert (entry["instance_type"], entry["market"], entry["state_at_termination"]) == (
        "t2.micro",
        "on-demand",
        "running",
    )
    launch, ready, end = (
        datetime.datetime.fromisoformat(entry[f"{k}_time"]) for k in ("launch", "ready", "termination")
    )
    assert launch <= ready <= end
    # Counted from the exact times; the stamps are cut to the second.
    assert abs(int(entry["billed_seconds"]) - billing.billed_seconds(launch, end)) <= 1
    summary = f"({entry['instance_type']}, on-demand, {entry['billed_seconds']} s); {entry['billed_seconds']} s billed"
    output = "".join(capfd.readouterr())
    assert f"Cost of this run: submission {submission_id} ('random_forest' of team '{team}'), scored: " in output
    assert f"{entry['instance_id']} {summary}" in output
    report = subprocess.run(
        [str(Path(sys.executable).with_name("ramp-airflow")), "cost-report", str(event.path), "--by", "submission"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    figures = ["1", "1", entry["billed_seconds"]]
    assert report.stdout.splitlines()[1].split()[:6] == [submission_id, team, "random_forest", *figures]


def test_failing_submission_is_a_training_error_with_its_traceback(event, ec2):
    submission_id = event.db.submissions["error_in_fit"]
    earlier = instances_of(ec2, submission_id)
    dag_run = event.training.test(run_conf={"team": event.db.teams[0], "name": "error_in_fit"})

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    recorded = event.submission(submission_id)
    assert recorded["state"] == "training_error"
    # ramp-test's own traceback, from its first line to the exception, as ramp-board stores it.
    assert recorded["error_msg"].startswith("Traceback (most recent call last):")
    assert recorded["error_msg"].rstrip().endswith("ValueError: error_in_fit: this submission fails on purpose")
    assert states["hook_successful_training"] == "skipped" and states["hook_failed_training"] == "success"
    assert [h["RAMP_AWS_HOOK"] for h in event.hooks()] == ["start_training", "failed_training"]
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]


def test_a_trained_submission_is_trained_again_only_when_asked(event, ec2, capfd):
    """Without retrain, a submission that failed is refused with how to re-train; with it, trained in that run."""
    submission_id = event.db.submissions["random_forest"]
    event.db.query("UPDATE submissions SET state = 'training_error', error_msg = 'old' WHERE id = %s", (submission_id,))
    refused = event.training.test(run_conf={"submission_id": submission_id})
    assert task_states(refused)["claim_submission"] == "failed"
    assert 'tick "Train again" in the trigger form' in "".join(capfd.readouterr())
    assert event.submission(submission_id)["state"] == "training_error"

    earlier = instances_of(ec2, submission_id)
    dag_run = event.training.test(run_conf={"submission_id": submission_id, "retrain": True})
    assert dag_run.state == "success", task_states(dag_run)
    assert event.submission(submission_id)["state"] == "scored" and event.submission(submission_id)["error_msg"] == ""
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]


def test_existing_instance_is_used_and_left_running(event, ec2):
    submission_id = event.db.submissions["random_forest"]
    existing = ec2.launch()["InstanceId"]
    earlier = instances_of(ec2, submission_id)
    dag_run = event.training.test(run_conf={"submission_id": submission_id, "instance_id": existing})

    assert dag_run.state == "success", task_states(dag_run)
    assert event.submission(submission_id)["state"] == "scored"
    (reservation,) = ec2.client().describe_instances(InstanceIds=[existing])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "running"
    assert instances_of(ec2, submission_id, earlier) == {}  # nothing was launched for it


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"submission_id": 99999}, "99999"),
        ({"team": "nobody", "name": "random_forest"}, "nobody"),
        ({"submission_id": 3, "team": "test_user", "name": "random_forest"}, "not both"),
        ({"submision_id": 3}, "conf.submision_id: unknown field"),
    ],
)
def test_bad_conf_fails_at_the_first_task_and_changes_nothing(event, ec2, conf, message, capfd):
    before = event.db.query("SELECT id, state FROM submissions ORDER BY id")
    dag_run = event.training.test(run_conf=conf)

    states = task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["claim_submission"] == "failed"
    assert states.pop("terminate_leftover_instances") == "success"  # it runs whatever happened, and finds none
    assert states.pop("ensure_final_state") == "failed"  # the run shows that it trained nothing
    assert all(
        state in ("upstream_failed", "skipped", None) for task, state in states.items() if task != "claim_submission"
    )
    assert message in "".join(capfd.readouterr())
    assert event.db.query("SELECT id, state FROM submissions ORDER BY id") == before


def test_sandbox_is_refused(event, ec2, capfd):
    sandbox = event.db.sandbox_ids[0]
    dag_run = event.training.test(run_conf={"submission_id": sandbox})
    assert task_states(dag_run)["claim_submission"] == "failed"
    assert "is the event's sandbox" in "".join(capfd.readouterr())
    assert event.submission(sandbox)["state"] == "new"


def test_a_submission_left_in_flight_becomes_checking_error_once(event):
    """The run's last task records the platform failure and fails for good: a retry would hide it."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    from ramp_airflow.dag_factory.training import SUBMISSION
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook
    from ramp_airflow.utils.claim_sql import RunRef

    submission_id = event.db.submissions["random_forest"]
    task = event.training.get_task("ensure_final_state")
    hook = RampDatabaseHook(database=task.database)
    hook.claim_submission(submission_id, RunRef(event.training.dag_id, "manual__left"))
    hook.set_training(submission_id)
    assert task.submission == f"{{{{ {SUBMISSION} }}}}"
    task.submission = {"id": submission_id}  # as the claim task's XCom renders it
    with pytest.raises(AirflowFailException, match="no longer this run's"):
        task.execute({"run_id": "manual__other"})  # not that run's: left alone
    assert event.submission(submission_id)["state"] == "training"
    with pytest.raises(AirflowFailException, match="left training; it is now checking_error"):
        task.execute({"run_id": "manual__left"})
    after = event.submission(submission_id)
    assert after["state"] == "checking_error" and "without a result" in after["error_msg"]
    task.execute({"run_id": "manual__left"})  # nothing left to do
    assert event.submission(submission_id)["state"] == "checking_error"


@pytest.mark.parametrize("instance_retries", [1, 0], ids=["replaced", "lost on the last attempt"])
def test_lost_instance_is_replaced(event, ec2, instance, tmp_path, monkeypatch, instance_retries):
    """
    sshd goes away and EC2 terminates the instance mid-training: attempt 2 trains on a new one, or,
    on the last attempt, the submission is checking_error (the platform's failure, not the participant's).
    """
    training = slow_dags(event, ec2, instance, tmp_path, monkeypatch, instance_retries=instance_retries)[0]
    submission_id = event.db.submissions["random_forest"]
    job = fresh_job_record(instance, submission_id)
    earlier = instances_of(ec2, submission_id)
    since = datetime.datetime.now(datetime.timezone.utc)

    def lose_the_first_instance():
        wait_for(lambda: training_started(training.dag_id, since, job), "training to start")
        (first,) = instances_of(ec2, submission_id, earlier)
        ec2.client().terminate_instances(InstanceIds=[first])
        machine_gone(instance, submission_id)
        if instance_retries:
            wait_for(lambda: len(instances_of(ec2, submission_id, earlier)) == 2, "a second instance")
        else:
            wait_for(lambda: event.submission(submission_id)["state"] != "training", "the loss to be recorded")

    dag_run = train_while(training, submission_id, lose_the_first_instance, instance)

    states = task_states(dag_run)
    recorded = event.submission(submission_id)
    # Each attempt's teardown recorded its instance, the lost one too: EC2 had terminated it already.
    rows = event.ledger_rows()
    assert sorted(row["instance_id"] for row in rows) == sorted(instances_of(ec2, submission_id, earlier))
    assert [(row["terminated_by"], row["state_at_termination"]) for row in rows][: instance_retries + 1] == [
        ("attempt_1.terminate_instance", "terminated"),
        ("attempt_2.terminate_instance", "running"),
    ][: instance_retries + 1]
    assert all(row["ready_time"] and int(row["billed_seconds"]) >= 60 for row in rows)
    if not instance_retries:
        assert recorded["state"] == "checking_error" and "lost during training 1 time(s)" in recorded["error_msg"]
        assert states["record_results"] == "failed"
        assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]
        return
    assert dag_run.state == "success", states
    assert states["attempt_1.wait_for_training"] == "skipped" and states["attempt_2.wait_for_training"] == "success"
    assert states["attempt_1.fetch_results"] == "skipped" and states["attempt_2.fetch_results"] == "success"
    assert states["attempt_1.terminate_instance"] == "success"
    assert recorded["state"] == "scored"
    assert sorted(instances_of(ec2, submission_id, earlier).values()) == ["terminated", "terminated"]


def slow_dags(event, ec2, instance, tmp_path, monkeypatch, **aws_overrides):
    """The training and housekeeping DAGs of a config whose every training sleeps first (5 s)."""
    from ramp_airflow.dag_factory import event_dags

    slow = "bash -c 'sleep 5; exec ramp-test \"$@\"' ramp-test"
    config = write_event_config(tmp_path / "slow.yml", event.db, instance, ec2, training_command=slow, **aws_overrides)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    dags = event_dags(config)
    return dags[f"ramp_train_{event.db.event}"], dags[f"ramp_housekeeping_{event.db.event}"]


def fresh_job_record(instance, submission_id: int) -> str:
    """The folder of the submission's training job record on the bench instance, an earlier test's removed."""
    job = os.path.join(instance.kit_dir, "submissions", f"submission_{submission_id:09d}", "training_job")
    shutil.rmtree(job, ignore_errors=True)
    return job


def training_started(dag_id: str, since: datetime.datetime, job: str) -> bool:
    """
    The first attempt's training runs and its wait waits for it. The job's pid file comes before the
    start command's SSH session ends: dropping connections in between would lose the instance during
    the upload, not during the training. Once the wait waits for its trigger, dag.test() has it queued
    again (the scheduler: deferred).
    """
    return task_state(dag_id, "attempt_1.wait_for_training", since) in ("queued", "deferred") and os.path.exists(
        os.path.join(job, "pid")
    )


def task_state(dag_id: str, task_id: str, since: datetime.datetime) -> str | None:
    with create_session() as session:
        return session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id, TaskInstance.start_date >= since
            )
        )


def train_while(training, submission_id: int, sabotage, instance):
    """
    Train ``submission_id`` through a whole run while ``sabotage`` runs in a thread (its failures fail
    the test); the bench's sshd is started again after it, whatever it stopped.
    """
    failures = []

    def saboteur():
        try:
            sabotage()
        except Exception as err:  # reported below
            failures.append(err)
        finally:
            instance.start()

    thread = threading.Thread(target=saboteur)
    thread.start()
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        thread.join(timeout=120)
    assert not failures, failures
    return dag_run


def machine_gone(instance, submission_id: int) -> None:
    """What a terminated machine takes with it: its processes and open connections (the watch's among them)."""
    instance.kill_training(submission_id)
    instance.drop_connections()
    instance.stop()


def test_a_submission_moved_mid_training_stops_its_run(event, ec2, instance, tmp_path, monkeypatch):
    """
    An organiser re-queues a submission while it trains: the housekeeping terminates its instance, and its
    run, no longer owning the claim, launches no other instance and writes nothing.
    """
    training, housekeeping = slow_dags(event, ec2, instance, tmp_path, monkeypatch, instance_retries=1)
    submission_id = event.db.submissions["random_forest"]
    job = fresh_job_record(instance, submission_id)
    earlier = instances_of(ec2, submission_id)
    since = datetime.datetime.now(datetime.timezone.utc)
    stop_disowned = housekeeping.get_task("stop_disowned_instances")
    kept, stopped = [], []

    def requeue_mid_training():
        wait_for(lambda: training_started(training.dag_id, since, job), "training to start")
        kept.extend(instances_of(ec2, submission_id, earlier))
        assert not set(kept) & set(stop_disowned.execute({})), "the run's own instance was stopped"
        event.db.query("UPDATE submissions SET state = 'new' WHERE id = %s", (submission_id,))
        stopped.extend(stop_disowned.execute({}))
        machine_gone(instance, submission_id)
        wait_for(
            lambda: task_state(training.dag_id, "attempt_2.launch_instance", since) == "failed",
            "the second attempt's launch to be refused",
        )

    dag_run = train_while(training, submission_id, requeue_mid_training, instance)

    states = task_states(dag_run)
    assert dag_run.state == "failed", states
    assert states["attempt_1.wait_for_training"] == "skipped" and states["attempt_2.launch_instance"] == "failed"
    assert states["ensure_final_state"] == "failed"  # the run shows that it trained nothing
    # Kept while the run owned the claim, stopped once it did not; no other instance was launched.
    assert len(kept) == 1 and kept[0] in stopped
    assert instances_of(ec2, submission_id, earlier) == {kept[0]: "terminated"}
    recorded = event.submission(submission_id)
    assert recorded["state"] == "new" and not recorded["error_msg"]


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_wrong_type_is_refused_when_the_run_is_created(event, ec2):
    """The trigger form's Params check types before anything runs (the claim task checks the rest)."""
    from airflow.sdk.exceptions import ParamValidationError

    before = event.db.query("SELECT id, state FROM submissions ORDER BY id")
    with pytest.raises(ParamValidationError, match="submission_id"):
        event.training.test(run_conf={"submission_id": "42"})
    assert event.db.query("SELECT id, state FROM submissions ORDER BY id") == before


def test_a_task_past_its_bound_still_ends_the_run_cleanly(event, ec2):
    """A stalled step fails by its time bound: the instance is terminated, the submission ends in a final state."""
    submission_id = event.db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    fetch = event.training.get_task("attempt_1.fetch_results")
    fetch.execution_timeout, fetch.retries = datetime.timedelta(seconds=0.01), 0
    dag_run = event.training.test(run_conf={"submission_id": submission_id})

    states = task_states(dag_run)
    assert dag_run.state == "failed", states
    assert states["attempt_1.fetch_results"] == "failed" and states["attempt_1.terminate_instance"] == "success"
    assert states["ensure_final_state"] == "failed"  # it recorded the platform failure
    recorded = event.submission(submission_id)
    assert recorded["state"] == "checking_error" and "without a result" in recorded["error_msg"]
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]


def test_a_run_for_a_submission_another_run_claimed_trains_nothing(event, ec2):
    """A manual trigger racing the loop (or a second trigger) is refused and changes nothing."""
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook
    from ramp_airflow.utils.claim_sql import RunRef

    hook = RampDatabaseHook(database=event.training.get_task("claim_submission").database)
    submission_id = event.db.submissions["random_forest"]
    hook.claim_submission(submission_id, RunRef(event.training.dag_id, "manual__first"))
    before = event.db.query("SELECT * FROM submissions WHERE id = %s", (submission_id,))
    earlier = instances_of(ec2, submission_id)
    dag_run = event.training.test(run_conf={"submission_id": submission_id})

    states = task_states(dag_run)
    assert dag_run.state == "failed" and states["claim_submission"] == "failed"
    assert states["attempt_1.launch_instance"] == "upstream_failed" and states["ensure_final_state"] == "failed"
    assert event.db.query("SELECT * FROM submissions WHERE id = %s", (submission_id,)) == before
    assert instances_of(ec2, submission_id, earlier) == {}
