"""
Training runs started the ways an organiser starts them, against one running stack: the ``airflow
dags trigger`` CLI and the REST API, good confs and bad ones; and the training's live log, read back
through Airflow's own log reader while the training runs and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error

import pytest

from ramp_airflow.utils import ec2_tags
from testbench._proc import wait_until
from testbench.airflow_stack import AIRFLOW, running_airflow
from testbench.event_config import write_event_config
from testbench.task_logs import all_tries_log, task_instance, task_log
from testbench.training_runs import instances_of

# While this file exists in the kit folder, a training holds after printing its numbered lines.
HOLD = "hold-live-log"
LINES = 3
# Numbered lines with an escape sequence, a bell and a NUL in each, then the hold, then ramp-test.
LIVE_TRAINING = (
    "bash -c '"
    f'for i in $(seq {LINES}); do printf "live line %s \\033[1;31mred\\033[0m bell\\a nul\\0 end\\n" "$i"; sleep 1; done; '
    f"n=0; while [ -e {HOLD} ] && [ $n -lt 1200 ]; do sleep 0.5; n=$((n + 1)); done; "
    'exec ramp-test "$@"'
    "' ramp-test"
)
CLEAN_LINES = [f"live line {i} red bell nul end" for i in range(1, LINES + 1)]
CONTROL = ("\x1b", "\x00", "\x07")
WAIT_FOR_TRAINING = "attempt_1.wait_for_training"


@pytest.fixture(scope="module")
def module_db(ramp_template):
    """A seeded RAMP database for this module's stack."""
    db = ramp_template.copy()
    yield db
    db.drop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, module_db, instance, ec2):
    """One stack for the module (each start costs ~40 s); the loop stays paused: only the tests train."""
    work = tmp_path_factory.mktemp("triggers")
    config = write_event_config(work / "config.yml", module_db, instance, ec2, training_command=LIVE_TRAINING)
    with running_airflow(postgres, str(config), extra_env=ec2.env, home=str(work / "airflow")) as running:
        running.wait_for_dag(f"ramp_train_{module_db.event}")
        yield running


def run_ended(stack, dag_id: str, run_id: str, timeout: float = 420) -> dict:
    """Wait (bounded) until the run has ended; its record."""

    def ended():
        stack.check_alive()
        run = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    return wait_until(ended, timeout, f"run {run_id} to end", 1.0)


def state_of(db, submission_id: int) -> str:
    return db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,))[0][0]


def transitions(stack, dag_id: str, run_id: str, submission_id: int) -> list[str]:
    """The state-change lines of one submission in its run's database tasks' logs, every try."""
    prefix = f"Submission {submission_id}: "
    tasks = ("claim_submission", "attempt_1.mark_training", "record_results", "ensure_final_state")
    return [line for task in tasks for line in all_tries_log(stack, dag_id, run_id, task) if line.startswith(prefix)]


def assert_trained(stack, db, ec2, run_id: str, submission_id: int, earlier, final: str = "scored") -> None:
    """The run succeeded, the submission is ``final``, its one instance is gone, one log line per state change."""
    training = f"ramp_train_{db.event}"
    run = run_ended(stack, training, run_id)
    assert run["state"] == "success", stack.task_states(training, run_id)
    assert state_of(db, submission_id) == final
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]
    owner = f"(run {run_id} of {training})"
    assert transitions(stack, training, run_id, submission_id) == [
        f"Submission {submission_id}: new -> sent_to_training {owner}",
        f"Submission {submission_id}: sent_to_training -> training {owner}",
        f"Submission {submission_id}: training -> {final} {owner}",
    ]


def test_the_cli_trigger_trains_a_submission(stack, module_db, ec2):
    db = module_db
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    conf = json.dumps({"submission_id": submission_id})
    argv = [AIRFLOW, "dags", "trigger", f"ramp_train_{db.event}", "--conf", conf, "--run-id", "cli_trigger"]
    done = subprocess.run(argv, env=stack.env, cwd=stack.home, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_trained(stack, db, ec2, "cli_trigger", submission_id, earlier)


def test_the_rest_trigger_trains_a_submission_named_by_team_and_name(stack, module_db, ec2):
    db = module_db
    name = "x;touch PWNED$(id)"
    submission_id = db.submissions[name]
    earlier = instances_of(ec2, submission_id)
    training = f"ramp_train_{db.event}"
    body = {"dag_run_id": "rest_trigger", "logical_date": None, "conf": {"team": "test_user_2", "name": name}}
    created = stack.request("POST", f"/api/v2/dags/{training}/dagRuns", body)
    assert created["conf"] == body["conf"]
    assert_trained(stack, db, ec2, "rest_trigger", submission_id, earlier)


def launched_by(ec2, run_id: str) -> list[str]:
    answer = ec2.client().describe_instances(Filters=[{"Name": f"tag:{ec2_tags.RUN_ID}", "Values": [run_id]}])
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


def test_bad_confs_are_refused_or_fail_their_run_once(stack, module_db, ec2):
    db = module_db
    training = f"ramp_train_{db.event}"
    runs_before = len(stack.dag_runs(training))

    # A wrong type: the trigger form's schema refuses it, and no run is created.
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.request(
            "POST", f"/api/v2/dags/{training}/dagRuns", {"logical_date": None, "conf": {"submission_id": "7"}}
        )
    assert refused.value.code == 400
    detail = json.loads(refused.value.read())["detail"]
    assert "submission_id" in detail and "'7' is not of type" in detail, detail
    # So does the CLI's.
    argv = [AIRFLOW, "dags", "trigger", training, "--conf", json.dumps({"submission_id": "7"})]
    done = subprocess.run(argv, env=stack.env, cwd=stack.home, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "'7' is not of type" in done.stdout + done.stderr, done.stdout + done.stderr
    assert len(stack.dag_runs(training)) == runs_before

    # Confs the schema lets through: each run fails at its claim, once, saying which field is at fault.
    bad = {
        "bad_conf_field": ({"submision_id": db.submissions["random_forest"]}, "conf.submision_id: unknown field"),
        "bad_conf_unknown": ({"submission_id": 999_999}, "conf.submission_id: no submission id 999999"),
        "bad_conf_team": ({"team": "nobody", "name": "rf"}, "conf.team and conf.name: no submission 'rf' of team"),
    }
    in_flight_before = db.query("SELECT id FROM submissions WHERE state IN ('sent_to_training', 'training')")
    for run_id, (conf, _) in bad.items():
        stack.trigger(training, conf, run_id=run_id)
    for run_id, (_, message) in bad.items():
        assert run_ended(stack, training, run_id)["state"] == "failed"
        claim = task_instance(stack, training, run_id, "claim_submission")
        assert (claim["state"], claim["try_number"]) == ("failed", 1)  # AirflowFailException: no retry
        log = task_log(stack, training, run_id, "claim_submission", 1)
        assert any(f"AirflowFailException: bad conf for this training run: {message}" in line for line in log), log
        states = stack.task_states(training, run_id)
        assert (states["attempt_1.launch_instance"], states["ensure_final_state"]) == ("upstream_failed", "failed")
        assert launched_by(ec2, run_id) == []
    in_flight = db.query("SELECT id FROM submissions WHERE state IN ('sent_to_training', 'training')")
    assert in_flight == in_flight_before == []


def test_the_live_training_log_reads_back_in_order_and_clean(stack, module_db, ec2, instance):
    db = module_db
    training = f"ramp_train_{db.event}"
    submission_id = db.submissions["error_in_fit"]
    earlier = instances_of(ec2, submission_id)
    hold = os.path.join(instance.kit_dir, HOLD)
    open(hold, "w").close()
    try:
        stack.trigger(training, {"submission_id": submission_id}, run_id="live_log")

        def deferred_with_every_line() -> list[str] | None:
            stack.check_alive()
            try:
                waiting = task_instance(stack, training, "live_log", WAIT_FOR_TRAINING)
            except urllib.error.HTTPError as err:
                if err.code == 404:  # the run's task instances are not created yet
                    return None
                raise
            if waiting["state"] != "deferred":
                assert waiting["state"] in (None, "scheduled", "queued"), waiting  # not yet; never past it
                return None
            log = task_log(stack, training, "live_log", WAIT_FOR_TRAINING, waiting["try_number"])
            # Read while deferred: the hold keeps it so until the test lets the training go on.
            assert task_instance(stack, training, "live_log", WAIT_FOR_TRAINING)["state"] == "deferred"
            return log if all(line in log for line in CLEAN_LINES) else None

        live = wait_until(deferred_with_every_line, 420, "the training's lines in the deferred task's log", 1.0)
    finally:
        os.remove(hold)
    assert_in_order_and_clean(live)

    assert_trained(stack, db, ec2, "live_log", submission_id, earlier, final="training_error")
    ended = task_log(stack, training, "live_log", WAIT_FOR_TRAINING, 1)
    assert_in_order_and_clean(ended)
    assert task_instance(stack, training, "live_log", WAIT_FOR_TRAINING)["state"] == "success"


def assert_in_order_and_clean(log: list[str]) -> None:
    """The numbered lines once each and in order; no escape, NUL or bell anywhere in the log."""
    assert [line for line in log if line.startswith("live line")] == CLEAN_LINES, log
    assert not [line for line in log if any(c in line for c in CONTROL)]
