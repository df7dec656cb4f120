"""
Faults injected into real training runs: each case breaks one thing at one point of a submission's path
and checks the invariants that matter to an organiser at 3 a.m.: the submission ends in a final state,
it is trained once, its result is a clean run's, no instance is left running, nothing is stuck.

Processes are killed by PID (Airflow's components, the RAMP database's own PostgreSQL); sshd is the
instance's. The other faults (a duplicate trigger, a trigger racing the loop, a re-queued
submission, Ctrl-C of ramp_aws_train, a cancelled run, a launch killed after RunInstances) have their
tests beside the feature they exercise: test_training_dag, test_loop_dag and test_train_commands.
"""

from __future__ import annotations

import threading

import pytest

from testbench._proc import wait_until
from testbench.airflow_stack import running_airflow
from testbench.event_config import write_event_config
from testbench.postgres import running_postgres
from testbench.ramp_database import seed_ramp_database
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
    """Scored, with a score for each fold and score type, and its one instance terminated."""
    assert db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]
    scores = scores_of(db, submission_id)
    assert len(scores) == 2 * db.n_cv_folds and all(present for _, present in scores)
    assert list(instances_of(ec2, submission_id, earlier).values()) == ["terminated"]


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
    from ramp_airflow.dag_factory import event_dags
    from ramp_airflow.operators.ramp_database import FinalizeSubmissionOperator, RecordResultsOperator

    db = own_ramp_database
    config = write_event_config(tmp_path / "config.yml", db, instance, ec2)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    while_recording = Outage(db.cluster.stop, db.cluster.start, 3)
    at_the_end = Outage(db.cluster.stop, db.cluster.start, 8)
    monkeypatch.setattr(RecordResultsOperator, "execute", while_recording.around(RecordResultsOperator.execute))
    monkeypatch.setattr(FinalizeSubmissionOperator, "execute", at_the_end.around(FinalizeSubmissionOperator.execute))
    training = event_dags(config)[f"ramp_train_{db.event}"]
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        while_recording.join()
        at_the_end.join()

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert_scored_once(db, ec2, submission_id, earlier)


def test_sshd_down_as_the_upload_and_the_download_start(
    tmp_path, fresh_ramp_db, instance, ec2, airflow_home, monkeypatch
):
    """Each transfer's first try fails (the instance's sshd is gone for 3 s): their retries finish the job."""
    from ramp_airflow.dag_factory import event_dags
    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

    db = fresh_ramp_db
    config = write_event_config(tmp_path / "config.yml", db, instance, ec2)
    monkeypatch.setenv("RAMP_AIRFLOW_CONFIG_DIR", str(config))
    upload = Outage(instance.stop, instance.start, 3)
    download = Outage(instance.stop, instance.start, 3)
    rsync = upload.around(InstanceSSHHook.rsync, when=lambda *args, download=False, **kwargs: not download)
    rsync = download.around(rsync, when=lambda *args, download=False, **kwargs: download)
    monkeypatch.setattr(InstanceSSHHook, "rsync", rsync)
    training = event_dags(config)[f"ramp_train_{db.event}"]
    submission_id = db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    try:
        dag_run = training.test(run_conf={"submission_id": submission_id})
    finally:
        upload.join()
        download.join()

    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert upload.threads and download.threads  # both faults happened
    assert_scored_once(db, ec2, submission_id, earlier)


@pytest.fixture
def stack_and_db(tmp_path, postgres, fresh_ramp_db, instance, ec2):
    config = write_event_config(
        tmp_path / "config.yml", fresh_ramp_db, instance, ec2, training_command=SLOW_TRAINING.format(secs=20)
    )
    with running_airflow(postgres, str(config), extra_env=ec2.env, home=str(tmp_path / "airflow")) as stack:
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

    def deferred() -> bool:
        stack.check_alive()
        return stack.task_states(training, run_id).get(wait_task) == "deferred"

    wait_until(deferred, 180, f"{wait_task} to be deferred", 0.5)
    stack.kill(component)
    stack.restart(component)

    def ended():
        stack.check_alive()
        (run,) = [r for r in stack.dag_runs(training) if r["dag_run_id"] == run_id]
        return run if run["state"] in ("success", "failed") else None

    run = wait_until(ended, 300, "the run to end", 1.0)
    states = stack.task_states(training, run_id)
    assert run["state"] == "success", states
    assert states["attempt_2.launch_instance"] == "skipped"  # the first attempt's instance trained it
    assert_scored_once(db, ec2, submission_id, earlier)
