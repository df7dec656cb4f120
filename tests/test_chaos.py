"""
Faults injected into real training runs: each case breaks one thing at one point of a submission's path
and checks the invariants that matter to an organiser at 3 a.m.: the submission ends in a final state,
it is trained once, its result is a clean run's, no instance is left running, nothing is stuck.

Processes are killed by PID (Airflow's components and task processes, the RAMP database's own
PostgreSQL); sshd is the instance's. A task process is killed at an exact step by holding it there
first (testbench.fault_points). The other faults (a duplicate trigger, a trigger racing the loop, a
re-queued or moved submission, Ctrl-C of ramp_aws_train) have their tests beside the feature they
exercise: test_training_dag, test_loop_dag and test_train_commands.
"""

from __future__ import annotations

import os
import signal
import threading
import urllib.error

import pytest

from ramp_airflow.dag_factory import bounds
from testbench._proc import wait_until
from testbench.airflow_stack import running_airflow
from testbench.event_config import write_event_config
from testbench.fault_points import AIRFLOW_PATH, FOLDER_VARIABLE, FaultPoint
from testbench.postgres import running_postgres
from testbench.ramp_database import seed_ramp_database
from testbench.task_logs import task_log
from testbench.training_runs import instances_of, task_states

# Every training sleeps first, leaving time to break something while it runs.
SLOW_TRAINING = "bash -c 'sleep {secs}; exec ramp-test \"$@\"' ramp-test"


def scores_of(db, submission_id: int) -> list:
    return db.query(
        "SELECT c.cv_fold_id, f.valid_score IS NOT NULL FROM submission_score_on_cv_folds f "
        "JOIN submission_on_cv_folds c ON c.id = f.submission_on_cv_fold_id WHERE c.submission_id = %s ORDER BY 1",
        (submission_id,),
    )


def assert_scored_once(db, ec2, submission_id: int, earlier) -> None:
    """Scored, with every score of each fold, and its one instance terminated."""
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]
    scores = scores_of(db, submission_id)
    assert len({fold for fold, _ in scores}) == db.n_cv_folds and all(present for _, present in scores)
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]


def training_dag(tmp_path, db, instance, ec2, monkeypatch, **aws_overrides):
    """The bench event's training DAG for ``dag.test()``, from a config of this test's own."""
    from ramp_airflow.dag_factory import event_dags

    config = write_event_config(tmp_path / "config.yml", db, instance, ec2, **aws_overrides)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    return event_dags(config)[f"ramp_train_{db.event}"]


def scored_despite(training, db, ec2, *outages) -> None:
    """Train ``random_forest`` through a real run while ``outages`` strike; it must end scored, once."""
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        for outage in outages:
            outage.join()
    assert all(outage.threads for outage in outages)  # every fault happened
    assert dag_run.state == "success", task_states(dag_run)
    assert_scored_once(db, ec2, submission_id, earlier)


class Outage:
    """Stop a service when a wrapped step starts, start it again a while later (in a thread)."""

    def __init__(self, stop, start, down_secs: float):
        self.stop, self.start, self.down_secs = stop, start, down_secs
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def around(self, method, when=lambda *args, **kwargs: True):
        """``method``, breaking the service at its first call for which ``when`` holds."""
        fired = []

        def wrapper(*args, **kwargs):
            if not fired and when(*args, **kwargs):
                fired.append(True)
                self.stop()
                thread = threading.Thread(target=self._start_later)
                thread.start()
                self.threads.append(thread)
            return method(*args, **kwargs)

        return wrapper

    def _start_later(self) -> None:
        try:
            threading.Event().wait(self.down_secs)
            self.start()
        except BaseException as err:  # reported by the test
            self.errors.append(err)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
        assert not self.errors, self.errors


@pytest.fixture
def own_ramp_database(postgres, tmp_path_factory):
    """A RAMP database in a PostgreSQL cluster of its own, so that restarting it leaves Airflow's alone."""
    with running_postgres() as cluster:
        yield seed_ramp_database(cluster, work_dir=str(tmp_path_factory.mktemp("own-ramp")))


def test_the_ramp_database_restarted_while_recording_and_down_at_the_end(
    own_ramp_database, tmp_path, instance, ec2, airflow_home, monkeypatch
):
    """PostgreSQL stops as record_results starts (back 3 s later) and as ensure_final_state starts (back 8 s later)."""
    from ramp_airflow.operators.ramp_database import FinalizeSubmissionOperator, RecordResultsOperator

    db = own_ramp_database
    while_recording = Outage(db.cluster.stop, db.cluster.start, 3)
    at_the_end = Outage(db.cluster.stop, db.cluster.start, 8)
    monkeypatch.setattr(RecordResultsOperator, "execute", while_recording.around(RecordResultsOperator.execute))
    monkeypatch.setattr(FinalizeSubmissionOperator, "execute", at_the_end.around(FinalizeSubmissionOperator.execute))
    scored_despite(training_dag(tmp_path, db, instance, ec2, monkeypatch), db, ec2, while_recording, at_the_end)


def test_sshd_down_as_the_upload_and_the_download_start(
    tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch
):
    """Each transfer's first try fails (the instance's sshd is gone for 3 s): their retries finish the job."""
    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

    db = fresh_ramp_db
    upload = Outage(instance.stop, instance.start, 3)
    download = Outage(instance.stop, instance.start, 3)
    rsync = upload.around(InstanceSSHHook.rsync, when=lambda *args, download=False, **kwargs: not download)
    rsync = download.around(rsync, when=lambda *args, download=False, **kwargs: download)
    monkeypatch.setattr(InstanceSSHHook, "rsync", rsync)
    scored_despite(training_dag(tmp_path, db, instance, ec2, monkeypatch), db, ec2, upload, download)


def test_an_instance_reclaimed_while_it_boots_is_replaced(
    tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch
):
    """EC2 terminates the first instance before its status checks pass: the second attempt trains."""
    db = fresh_ramp_db
    training = training_dag(tmp_path, db, instance, ec2, monkeypatch)
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    reclaimed = []

    def reclaim_the_first_instance():
        try:
            wait_until(lambda: instances_of(ec2, submission_id, earlier), 60, "the first instance", 0.1)
            reclaimed.extend(instances_of(ec2, submission_id, earlier))
            ec2.client().terminate_instances(InstanceIds=reclaimed)
        finally:
            ec2.set_status_delay(0)

    ec2.set_status_delay(6)  # every instance stays "initializing" that long after its launch
    saboteur = threading.Thread(target=reclaim_the_first_instance)
    saboteur.start()
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        saboteur.join(timeout=120)
        ec2.set_status_delay(0)

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["attempt_1.wait_for_instance"] == "skipped" and states["attempt_2.fetch_results"] == "success"
    assert len(reclaimed) == 1
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]
    assert sorted(instances_of(ec2, submission_id, earlier).values()) == ["terminated", "terminated"]


def run_ended(stack, dag_id: str, run_id: str) -> dict | None:
    """The run's record once it has ended, else None."""
    stack.check_alive()
    (run,) = [r for r in stack.dag_runs(dag_id) if r["dag_run_id"] == run_id]
    return run if run["state"] in ("success", "failed") else None


@pytest.fixture
def stack_and_db(tmp_path, postgres, fresh_ramp_db, instance, ec2):
    slow = SLOW_TRAINING.format(secs=20)
    # A short grace period: the sweep may take an instance as soon as its run has ended.
    config = write_event_config(
        tmp_path / "config.yml", fresh_ramp_db, instance, ec2, training_command=slow, orphan_grace_period_secs=1
    )
    faults = tmp_path / "fault_points"
    faults.mkdir()
    # Every component and task process gets the bench's fault points (testbench.fault_points).
    extra_env = {**ec2.env, "PYTHONPATH": os.pathsep.join(AIRFLOW_PATH), FOLDER_VARIABLE: str(faults)}
    with running_airflow(postgres, str(config), extra_env=extra_env, home=str(tmp_path / "airflow")) as stack:
        stack.fault_points = str(faults)
        yield stack, fresh_ramp_db


@pytest.mark.parametrize(
    "component, wait_task",
    [("triggerer", "attempt_1.wait_for_training"), ("scheduler", "attempt_1.wait_for_instance")],
    ids=["triggerer killed mid-training", "scheduler killed mid-wait"],
)
def test_an_airflow_component_killed_and_restarted_mid_run(stack_and_db, ec2, component, wait_task):
    stack, db = stack_and_db
    training = f"ramp_train_{db.event}"
    stack.wait_for_dag(training)
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    run_id = stack.trigger(training, {"submission_id": submission_id}, run_id=f"chaos_{component}")["dag_run_id"]
    wait_until(lambda: waiting(stack, training, run_id, wait_task), 180, f"{wait_task} to be deferred", 0.5)
    stack.kill(component)
    stack.restart(component)

    run = wait_until(lambda: run_ended(stack, training, run_id), 300, "the run to end", 1.0)
    states = stack.task_states(training, run_id)
    assert run["state"] == "success", states
    assert states["attempt_2.launch_instance"] == "skipped"  # the first attempt's instance trained it
    assert_scored_once(db, ec2, submission_id, earlier)


@pytest.mark.parametrize("kills", [1, 1 + bounds.RETRIES["retries"]], ids=["the retry trains", "no retry left"])
def test_the_launch_task_killed_right_after_runinstances(stack_and_db, ec2, kills):
    """
    SIGKILL of the launch task's process right after EC2 answered RunInstances, before the instance's id
    reached XCom. A retry finds the instance by its tags and trains on it: one instance, one training.
    With no retry left, the run's last task finds it by its tags and terminates it, and the submission
    ends in checking_error.
    """
    stack, db = stack_and_db
    training = f"ramp_train_{db.event}"
    stack.wait_for_dag(training)
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    launch = f"/api/v2/dags/{training}/dagRuns/chaos_launch_killed/taskInstances/attempt_1.launch_instance"
    point = FaultPoint(stack.fault_points, "launch_instance")
    point.arm()
    stack.trigger(training, {"submission_id": submission_id}, run_id="chaos_launch_killed")
    for _ in range(kills):
        kill_held(stack, point, launch)
    point.disarm()

    run = wait_until(lambda: run_ended(stack, training, "chaos_launch_killed"), 300, "the run to end", 1.0)
    states = stack.task_states(training, "chaos_launch_killed")
    if kills == 1:
        assert run["state"] == "success", states
        assert stack.request("GET", launch)["try_number"] == 2
        assert_scored_once(db, ec2, submission_id, earlier)
        return
    assert states["attempt_1.launch_instance"] == "failed" and states["terminate_leftover_instances"] == "success"
    assert stack.request("GET", launch)["try_number"] == kills
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("checking_error",)]


def test_the_loop_sensor_killed_right_after_its_claim(stack_and_db, ec2):
    """
    SIGKILL of the loop's sensor right after its claim committed, before any training run was triggered:
    the claim has no run. The loop's next run starts that run, which trains the submission once.
    """
    stack, db = stack_and_db
    loop, training = f"ramp_train_loop_{db.event}", f"ramp_train_{db.event}"
    submission_id = db.submissions["random_forest"]
    # One submission to claim: the others are set aside.
    db.query("UPDATE submissions SET state = 'training_error' WHERE state = 'new' AND id != %s", (submission_id,))
    earlier = instances_of(ec2, submission_id)
    stack.wait_for_dag(loop)
    stack.wait_for_dag(training)
    point = FaultPoint(stack.fault_points, "wait_for_new_submissions")
    point.arm()
    stack.unpause(loop)
    (first,) = wait_until(lambda: stack.dag_runs(loop), 120, "the loop's first run", 0.5)
    sensor = f"/api/v2/dags/{loop}/dagRuns/{first['dag_run_id']}/taskInstances/wait_for_new_submissions"
    kill_held(stack, point, sensor)
    point.disarm()
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("sent_to_training",)]

    def scored() -> bool:
        stack.check_alive()
        return db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]

    wait_until(scored, 300, "the claimed submission to be trained", 1.0)
    stack.request("PATCH", f"/api/v2/dags/{loop}", {"is_paused": True})
    assert wait_until(lambda: run_ended(stack, loop, first["dag_run_id"]), 60, "the killed loop run", 1.0)
    (run,) = stack.dag_runs(training)  # one run: the one its claim named
    ((owner,),) = db.query("SELECT run_id FROM ramp_airflow_claims WHERE submission_id = %s", (submission_id,))
    assert run["dag_run_id"] == owner
    wait_until(lambda: run_ended(stack, training, owner), 120, "the training run to end", 1.0)
    assert_scored_once(db, ec2, submission_id, earlier)


def kill_held(stack, point: FaultPoint, task_instance: str) -> None:
    """SIGKILL the task process held at ``point``, checking that it is the one Airflow runs ``task_instance`` in."""
    pid = point.wait_held(180, stack.check_alive)
    assert stack.request("GET", task_instance)["pid"] == pid
    os.kill(pid, signal.SIGKILL)


def waiting(stack, dag_id: str, run_id: str, task_id: str) -> bool:
    stack.check_alive()
    return stack.task_states(dag_id, run_id).get(task_id) == "deferred"


@pytest.mark.parametrize("action", ["mark the run failed", "clear the run"])
def test_a_run_cancelled_from_the_api_while_it_trains(stack_and_db, ec2, instance, action):
    """
    What the UI's "Mark as failed" and "Clear" do to a run that waits for its training: the wait's trigger
    terminates the instance and records the submission as cancelled at once. A cleared run starts again
    but trains and records nothing more: its submission is no longer in flight.
    """
    stack, db = stack_and_db
    training = f"ramp_train_{db.event}"
    stack.wait_for_dag(training)
    submission_id = db.submissions["random_forest"]
    earlier, scores_before = instances_of(ec2, submission_id), scores_of(db, submission_id)
    run_id = stack.trigger(training, {"submission_id": submission_id}, run_id="chaos_cancelled")["dag_run_id"]

    def in_the_triggerer() -> bool:
        # Deferred, or even assigned to a triggerer, is not enough: an action before the triggerer has
        # started the trigger reaches no trigger.
        stack.check_alive()
        try:
            lines = task_log(stack, training, run_id, "attempt_1.wait_for_training", 1)
        except urllib.error.HTTPError as err:
            if err.code != 404:  # no such try yet
                raise
            return False
        return any("starting" in line for line in lines)

    wait_until(in_the_triggerer, 180, "a triggerer to run the training wait", 0.5)
    if action == "clear the run":
        clear = {"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True}
        stack.request("POST", f"/api/v2/dags/{training}/clearTaskInstances", clear)
    else:
        stack.request("PATCH", f"/api/v2/dags/{training}/dagRuns/{run_id}", {"state": "failed"})

    def cancelled():
        stack.check_alive()
        ((state, error_msg),) = db.query("SELECT state, error_msg FROM submissions WHERE id = %s", (submission_id,))
        return (state, error_msg) if state != "training" else None

    state, error_msg = wait_until(cancelled, 120, "the cancel", 0.5)
    assert state == "checking_error" and f"cancelled by an operator (its run {run_id}" in error_msg
    # A run ends in the state its last tasks give (a run marked failed may show success once its
    # teardown has run, apache/airflow#45530); what counts is what it did not do.
    wait_until(lambda: run_ended(stack, training, run_id), 300, "the cancelled run to end", 1.0)
    assert stack.task_states(training, run_id)["record_results"] != "success"
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("checking_error",)]
    assert scores_of(db, submission_id) == scores_before
    # Its one instance, terminated: a cleared run's launch reuses it, or is refused, never launches another.
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]
    instance.kill_training(submission_id)  # what the terminated instance was still running
