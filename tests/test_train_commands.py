"""The seed's `ramp_aws_train`, run as a user would: a console script in the foreground."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ramp_airflow.config import load_config
from ramp_airflow.utils import cost_ledger
from ramp_airflow.utils.layout import cost_ledger_file
from testbench._proc import free_port, wait_until
from testbench.event_config import write_event_config

RAMP_AWS_TRAIN = str(Path(sys.executable).with_name("ramp_aws_train"))


@pytest.fixture
def config(tmp_path, fresh_ramp_db, instance, ec2, airflow_home):
    return write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2)


def ramp_aws_train(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAMP_AWS_TRAIN, str(config), *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def test_trains_one_submission_in_the_foreground(config, fresh_ramp_db):
    team = fresh_ramp_db.teams[0]
    done = ramp_aws_train(config, f"--event={fresh_ramp_db.event}", f"--team={team}", "--name=random_forest")
    submission_id = fresh_ramp_db.submissions["random_forest"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"submission {submission_id} ({team}/random_forest) of {fresh_ramp_db.event}: scored" in done.stdout
    assert fresh_ramp_db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,)) == [("scored",)]

    failing = ramp_aws_train(config, f"--event={fresh_ramp_db.event}", f"--team={team}", "--name=error_in_fit")
    assert failing.returncode == 1
    assert ": training_error" in failing.stdout


def test_ctrl_c_cancels_the_training_and_terminates_its_instance(tmp_path, fresh_ramp_db, instance, ec2, airflow_home):
    """Interrupted mid-training, ramp_aws_train leaves nothing running and nothing in flight."""
    from testbench.training_runs import instances_of

    slow = "bash -c 'sleep 120; exec ramp-test \"$@\"' ramp-test"
    config = write_event_config(tmp_path / "config.yml", fresh_ramp_db, instance, ec2, training_command=slow)
    submission_id = fresh_ramp_db.submissions["random_forest"]
    earlier = instances_of(ec2, submission_id)
    team = fresh_ramp_db.teams[0]
    train = subprocess.Popen(
        [RAMP_AWS_TRAIN, str(config), f"--event={fresh_ramp_db.event}", f"--team={team}", "--name=random_forest"],
        stdin=subprocess.DEVNULL,
        stdout=open(tmp_path / "train.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def state() -> str:
            return fresh_ramp_db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,))[0][0]

        wait_until(lambda: state() == "training", timeout=120, what="the training to start")
        train.send_signal(signal.SIGINT)
        assert train.wait(timeout=120) == 130, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
        instance.kill_training(submission_id)  # a terminated EC2 instance takes its processes with it
    ((final, error_msg),) = fresh_ramp_db.query(
        "SELECT state, error_msg FROM submissions WHERE id = %s", (submission_id,)
    )
    assert final == "checking_error" and "cancelled by an operator" in error_msg
    ((terminated, state),) = instances_of(ec2, submission_id, earlier).items()
    assert state == "terminated"
    assert "cancelled, its instance terminated" in (tmp_path / "train.log").read_text()
    # Billed, so in the event's cost ledger, as a run's own termination would be.
    aws = load_config(config).aws
    (row,) = cost_ledger.read_rows(cost_ledger_file(aws.local_log_folder, fresh_ramp_db.event))
    assert (row["instance_id"], row["terminated_by"], row["submission_name"]) == (
        terminated,
        "ramp_aws_train",
        "random_forest",
    )


def test_wrong_event_is_refused_before_anything_runs(config, fresh_ramp_db):
    done = ramp_aws_train(config, "--event=other", "--team=test_user", "--name=random_forest")
    assert done.returncode == 2
    assert f"--event=other does not match ramp.event_name ({fresh_ramp_db.event})" in done.stderr
    assert "Traceback" not in done.stderr


def test_train_loop_on_a_fresh_airflow_home(config, fresh_ramp_db, tmp_path):
    """
    `ramp_aws_train_loop` as a newcomer runs it: a new AIRFLOW_HOME and no Airflow setting at all. It
    starts Airflow with settings fitted to the machine (a setting the user made is kept), trains what
    is new, and stops everything on Ctrl-C.
    """
    home = tmp_path / "airflow"
    # The one setting made here: the user's own choice must win over ramp-airflow's.
    env = newcomer_env(home, AIRFLOW__API__PORT=str(free_port()), AIRFLOW__CORE__PARALLELISM="3")
    loop = start_loop(config, env, tmp_path / "loop.log")
    new = sorted(fresh_ramp_db.submissions.values())
    try:

        def all_trained():
            states = fresh_ramp_db.query("SELECT state FROM submissions WHERE id = ANY(%s)", (new,))
            return all(state in ("scored", "training_error") for (state,) in states)

        wait_until(all_trained, timeout=300, what="the loop to train every new submission")
        assert loop.poll() is None, "the loop stopped by itself"
        assert settings_of_started(config, "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME") == {"0.2"}
        assert settings_of_started(config, "AIRFLOW__CORE__PARALLELISM") == {"3"}
        assert settings_of_started(config, "AIRFLOW__API__HOST") == {"127.0.0.1"}
        assert_airflow_not_imported(loop.pid)
        loop.send_signal(signal.SIGINT)
        assert loop.wait(timeout=120) == 0
    finally:
        stop_loop(loop)
    states = dict(fresh_ramp_db.query("SELECT name, state FROM submissions WHERE id = ANY(%s)", (new,)))
    assert states["error_in_fit"] == "training_error"
    assert {s for name, s in states.items() if name != "error_in_fit"} == {"scored"}
    # Nothing it started is left running.
    assert not [p.pid for p in psutil.process_iter(["status"]) if started_for(p, config)]
    # Airflow's metadata is the SQLite file of the new home, in write-ahead-log mode, and each
    # component wrote its log where the command said.
    with sqlite3.connect(home / "airflow.db") as metadata:
        assert metadata.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    log_folder = home / "logs" / "ramp_aws_train_loop"
    assert f"their logs are in {log_folder}" in (tmp_path / "loop.log").read_text()
    assert {log.name for log in log_folder.iterdir()} == {
        "api-server.log",
        "scheduler.log",
        "triggerer.log",
        "dag-processor.log",
    }


def test_train_loop_stops_airflow_when_a_component_dies(tmp_path):
    """A component that dies (here the triggerer, killed) ends the command, naming it, and the others are stopped."""
    home, log = tmp_path / "airflow", tmp_path / "loop.log"
    loop = start_loop(example_config(tmp_path), newcomer_env(home, AIRFLOW__API__PORT=str(free_port())), log)
    try:
        wait_until(lambda: "Ctrl-C to stop." in log.read_text(), timeout=240, what="the loop to start Airflow")
        started = psutil.Process(loop.pid).children(recursive=True)
        (triggerer,) = [proc for proc in started if proc.cmdline()[-1:] == ["triggerer"]]
        triggerer.kill()
        assert loop.wait(timeout=120) == 1
    finally:
        stop_loop(loop)
    said = log.read_text()
    assert f"airflow triggerer exited (-9); see {home / 'logs' / 'ramp_aws_train_loop' / 'triggerer'}.log" in said
    assert not [proc.pid for proc in started if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]


def test_train_loop_with_a_scheduler_running_only_unpauses(tmp_path):
    """With a live scheduler on the metadata database, the loop unpauses the event's DAGs, starts nothing, and waits."""
    home = tmp_path / "airflow"
    # The scheduler's heartbeat is written once, before the loop starts: it stays recent enough.
    env = newcomer_env(home, AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="600")
    program = """
from ramp_airflow.local_airflow import prepare_metadata_database
prepare_metadata_database()
from airflow.jobs.job import Job, JobState
from airflow.utils.session import create_session
with create_session() as session:
    session.add(Job(job_type="SchedulerJob", state=JobState.RUNNING))
"""
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    config = example_config(tmp_path)
    loop = start_loop(config, env, tmp_path / "loop.log")
    try:
        wait_until(
            lambda: "with the running Airflow; Ctrl-C to stop." in (tmp_path / "loop.log").read_text(),
            timeout=120,
            what="the loop to find the running scheduler",
        )
        wait_until(lambda: not psutil.Process(loop.pid).children(), timeout=30, what="the setup process to exit")
        assert_airflow_not_imported(loop.pid)
        with contextlib.closing(sqlite3.connect(home / "airflow.db")) as metadata:
            assert dict(metadata.execute("SELECT dag_id, is_paused FROM dag")) == {
                "ramp_train_iris": 0,
                "ramp_train_loop_iris": 0,
                "ramp_housekeeping_iris": 0,
            }
        loop.send_signal(signal.SIGINT)
        assert loop.wait(timeout=30) == 0
    finally:
        stop_loop(loop)
    assert not (home / "logs" / "ramp_aws_train_loop").exists()


def test_train_loop_fails_with_the_error_of_its_setup(tmp_path):
    """A setup that fails (here Airflow's SQLite file is no database) ends the command with that error, not a hang."""
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.db").write_text("not a database\n")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ramp_aws_train_loop")), str(example_config(tmp_path))],
        env=newcomer_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "file is not a database" in done.stderr
    assert done.stderr.rstrip().endswith("Setting up Airflow failed (exit status 1); its error is above.")
    assert "No Airflow scheduler is running" not in done.stdout


def test_fitted_settings_keep_what_the_user_set(tmp_path):
    """A setting left at Airflow's default is fitted to the machine; one set in airflow.cfg or the environment is kept."""
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.cfg").write_text("[scheduler]\nscheduler_idle_sleep_time = 2\n")
    env = newcomer_env(home, AIRFLOW__API__HOST="0.0.0.0", AIRFLOW__API__PORT="9091")
    program = "import json, os; from ramp_airflow.local_airflow import settings_environment as s; "
    program += "print(json.dumps(s(dict(os.environ), cpus=2)))"
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:9091",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:9091/execution/",
    }


def newcomer_env(home: Path, **settings: str) -> dict[str, str]:
    """This environment as a newcomer's: no Airflow setting but these, and Airflow's home at ``home``."""
    # Nor an unbuffered Python: what the command prints must reach a log file by itself.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AIRFLOW", "PYTHONUNBUFFERED"))}
    env.update(AIRFLOW_HOME=str(home), **settings)
    return env


def example_config(tmp_path: Path) -> Path:
    """The README's example config (event ``iris``), for runs that train nothing."""
    config = tmp_path / "config.yml"
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "config.yml", config)
    return config


def start_loop(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ramp_aws_train_loop config.yml`` in a session of its own, its output in ``log``."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("ramp_aws_train_loop")), str(config)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_loop(loop: subprocess.Popen) -> None:
    """Stop a loop command still running as Ctrl-C would, then kill whatever it started that is left."""
    if loop.poll() is not None:
        return
    started = psutil.Process(loop.pid).children(recursive=True)
    loop.terminate()  # it stops Airflow as on Ctrl-C; anything left is killed below
    try:
        loop.wait(timeout=60)
    finally:
        loop.kill()  # a no-op once the loop has been waited for
        for proc in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        loop.wait()


def assert_airflow_not_imported(pid: int) -> None:
    """
    The loop command waits for as long as the event runs: Airflow imported would hold over 100 MiB
    there all along (118 MiB for ``airflow.configuration`` alone), while the command without it is
    about 30 MiB.
    """
    rss = psutil.Process(pid).memory_info().rss
    assert rss < 80 * 2**20, f"the loop command holds {rss / 2**20:.0f} MiB: has it imported Airflow?"


def settings_of_started(config: Path, name: str) -> set[str | None]:
    """The values of an environment variable among the live processes started for this config."""
    values = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if started_for(proc, config):
                values.add(proc.environ().get(name))
    return values


def started_for(proc: psutil.Process, config: Path) -> bool:
    """Whether a live process was started for this config (Airflow's components inherit its env)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("RAMP_AIRFLOW_CONFIG_DIR") == str(config)
    except psutil.Error:
        return False
