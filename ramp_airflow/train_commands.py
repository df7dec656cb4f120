"""
The old backend's two commands, on Airflow.

``ramp_aws_train config.yml --event=E --team=T --name=N [--instance-id=I]`` runs that
submission's training DAG to the end in the foreground, with no separately started Airflow.
``ramp_aws_train_loop config.yml`` keeps training the event's new submissions until
interrupted, driven by Airflow's scheduler (started here unless one is running).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from ramp_airflow.config import ConfigError, EventConfig, load_config
from ramp_airflow.utils.claim_sql import RunRef

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
# Airflow settings that ramp-airflow recommends, and sets for the Airflow it starts. The scheduler
# sleeps up to scheduler_idle_sleep_time (1 s by default) after every pass that queued nothing, and a
# submission's path crosses a dozen such passes: at 0.2 s one submission's overhead fell from 18 to
# 13.5 s, for about 5 CPU seconds a minute more while idle (benchmarks/README.md).
RECOMMENDED_AIRFLOW_SETTINGS = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"}


def _load(parser: argparse.ArgumentParser, path: str) -> EventConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        parser.exit(2)


def _airflow_environment(config: EventConfig) -> dict[str, str]:
    """Point Airflow at our DAG file and at this one config; the caller's own settings win."""
    env = dict(os.environ)
    env["RAMP_AIRFLOW_CONFIG_DIR"] = config.path
    # `airflow standalone` starts its components as `airflow ...`: the one installed beside us.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    for name, value in RECOMMENDED_AIRFLOW_SETTINGS.items():
        env.setdefault(name, value)
    # The API server and its UI are for this machine only unless the user says otherwise;
    # task runners reach it on whichever port it was given.
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    port = env.get("AIRFLOW__API__PORT", "8080")
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://127.0.0.1:{port}/execution/")
    return env


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def ramp_aws_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ramp_aws_train", description="Train one submission on EC2.")
    parser.add_argument("config", help="the event's config.yml")
    parser.add_argument("--event", required=True, help="the event name (must match ramp.event_name)")
    parser.add_argument("--team", required=True, help="the submission's team")
    parser.add_argument("--name", required=True, help="the submission's name")
    parser.add_argument("--instance-id", help="train on this running instance and leave it running")
    parser.add_argument("--retrain", action="store_true", help="train the submission again if it was trained already")
    args = parser.parse_args(argv)
    config = _load(parser, args.config)
    if args.event != config.event_name:
        parser.error(f"--event={args.event} does not match ramp.event_name ({config.event_name}) in {args.config}")

    env = _airflow_environment(config)
    _migrate(env)
    os.environ.update(env)
    started = datetime.datetime.now(datetime.timezone.utc)
    # The training runs in a child process with a session of its own, and Ctrl-C is handled here:
    # inside a task, Airflow's task runner takes an interrupt for that task's failure (and retries it).
    child = multiprocessing.get_context("fork").Process(target=_train_in_foreground, args=(config, args))
    signal.signal(signal.SIGTERM, _interrupt)
    child.start()
    try:
        child.join()
        return child.exitcode
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the training and the ssh/rsync it started
        child.join()
        # Airflow reads its settings when first imported: here, with the environment set.
        from ramp_airflow.dag_factory import training_dag_id

        for run_id in _cancel_runs_since(config, training_dag_id(config.event_name), started):
            print(f"Interrupted: Airflow run {run_id} cancelled, its instance terminated", file=sys.stderr)
        return 130


def _train_in_foreground(config: EventConfig, args: argparse.Namespace) -> None:
    """Run the submission's training DAG to its end (``dag.test()``); exit 0 when it is scored."""
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from ramp_airflow.dag_factory import event_dags, training_dag_id
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook

    dag = event_dags(config.path)[training_dag_id(config.event_name)]
    conf = {"team": args.team, "name": args.name, "instance_id": args.instance_id, "retrain": args.retrain or None}
    dag_run = dag.test(run_conf={k: v for k, v in conf.items() if v is not None})
    database = RampDatabaseHook(postgres_conn_id=config.database.postgres_conn_id, database=config.database)
    submission = database.find_submission(config.event_name, args.team, args.name)
    print(
        f"submission {submission['id']} ({args.team}/{args.name}) of {config.event_name}: {submission['state']} "
        f"(Airflow run {dag_run.run_id}: {dag_run.state})",
        flush=True,
    )
    sys.exit(0 if submission["state"] == "scored" else 1)


def _cancel_runs_since(config: EventConfig, dag_id: str, started: datetime.datetime) -> list[str]:
    """
    End what an interrupted ``ramp_aws_train`` started, as its run would have: terminate the instances
    the run launched, record its submission as cancelled (``checking_error``), and mark the run failed
    so that nothing counts it as live any more.
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from ramp_airflow.dag_factory.arguments import aws_credentials
    from ramp_airflow.hooks.ec2 import RampEc2Hook
    from ramp_airflow.hooks.ramp_database import RampDatabaseHook, StateTransitionError

    ec2 = RampEc2Hook(**aws_credentials(config).hook_kwargs())
    database = RampDatabaseHook(postgres_conn_id=config.database.postgres_conn_id, database=config.database)
    with create_session() as session:
        runs = session.query(DagRun).filter(
            DagRun.dag_id == dag_id, DagRun.state == "running", DagRun.run_after >= started
        )
        cancelled = []
        for run in runs:
            for instance in ec2.list_run_instances(dag_id, run.run_id):
                ec2.terminate_instance(instance["InstanceId"])
            owner = RunRef(dag_id, run.run_id)
            for submission_id, _, claimed_by in database.in_flight_claims(config.event_name):
                if claimed_by == owner:
                    with contextlib.suppress(StateTransitionError):
                        database.set_checking_error(submission_id, "Training was cancelled by an operator.", owner)
            run.state = "failed"
            cancelled.append(run.run_id)
    return cancelled


def _interrupt(signum, frame):
    """A termination request stops the loop as Ctrl-C does, so that Airflow is stopped too."""
    raise KeyboardInterrupt


def ramp_aws_train_loop(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ramp_aws_train_loop", description="Train every new submission of an event.")
    parser.add_argument("config", help="the event's config.yml")
    args = parser.parse_args(argv)
    config = _load(parser, args.config)
    env = _airflow_environment(config)
    _migrate(env)
    from ramp_airflow.dag_factory import housekeeping_dag_id, loop_dag_id, training_dag_id

    airflow = [sys.executable, "-m", "airflow"]
    scheduler_running = (
        subprocess.run(
            [*airflow, "jobs", "check", "--job-type", "SchedulerJob"], env=env, capture_output=True
        ).returncode
        == 0
    )
    dag_ids = tuple(dag_id(config.event_name) for dag_id in (training_dag_id, loop_dag_id, housekeeping_dag_id))
    # The event's DAGs in one Airflow command: each command costs seconds of start-up.
    only_these = ["--treat-dag-id-as-regex", "--yes", "^(" + "|".join(re.escape(d) for d in dag_ids) + ")$"]
    standalone = None
    if not scheduler_running:
        # Runs queued before a stop would start with the scheduler, before the API server answers,
        # and fail: the DAGs stay paused until it answers (below).
        subprocess.run([*airflow, "dags", "pause", *only_these], env=env, check=True, stdout=subprocess.DEVNULL)
        print("No Airflow scheduler is running: starting `airflow standalone` (API server on 127.0.0.1)")
        standalone = subprocess.Popen([*airflow, "standalone"], env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if standalone is not None:
            # The scheduler starts before the API server answers, and a task that starts before
            # then fails: the DAGs are unpaused only once the tasks' API answers.
            _wait_for_execution_api(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"], standalone)
        subprocess.run([*airflow, "dags", "reserialize"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*airflow, "dags", "unpause", *only_these], env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"Training new submissions of {config.event_name}; Ctrl-C to stop.")
        if standalone is None:
            signal.pause()
        return standalone.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if standalone is not None:
            _stop_process_group(standalone)


def _wait_for_execution_api(url: str, standalone: subprocess.Popen, timeout: float = 180) -> None:
    """Wait, bounded, until the execution API at ``url`` answers its health check."""
    health = url.rstrip("/") + "/health"
    # Never through a proxy the environment may name: this is Airflow's own API server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if standalone.poll() is not None:
            raise SystemExit(f"airflow standalone exited ({standalone.returncode}) before its API server answered")
        try:
            with opener.open(health, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"Airflow's API server did not answer on {health} within {timeout:.0f} s")
        time.sleep(0.5)


def _stop_process_group(leader: subprocess.Popen, timeout: float = 60) -> None:
    """Stop a process and everything it started in its session: TERM, a bounded wait, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, sig)
        deadline = time.monotonic() + timeout
        while _group_alive(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(leader.pid):
            break
    leader.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process group still has a running member (zombies do not count)."""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False
