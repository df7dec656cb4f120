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
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from ramp_airflow.config import ConfigError, EventConfig, load_config
from ramp_airflow.local_airflow import Components, prepare_metadata_database
from ramp_airflow.local_airflow_setup import LocalAirflowSetup, local_airflow_setup
from ramp_airflow.utils.claim_sql import RunRef
from ramp_airflow.utils.dag_ids import housekeeping_dag_id, loop_dag_id, training_dag_id
from ramp_airflow.utils.submission_states import CANCELLED_BY_OPERATOR

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
_log = logging.getLogger(__name__)


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
    # Anything that runs `airflow` finds the one installed beside us.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return env


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

    os.environ.update(_airflow_environment(config))
    prepare_metadata_database()
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
    from ramp_airflow.operators.terminations import terminate_recorded
    from ramp_airflow.utils import ec2_tags
    from ramp_airflow.utils.layout import cost_ledger_file

    ec2 = RampEc2Hook(**aws_credentials(config).hook_kwargs())
    database = RampDatabaseHook(postgres_conn_id=config.database.postgres_conn_id, database=config.database)
    # Each termination has its ledger row, as the run's own would: the event's budget counts it.
    ledger = cost_ledger_file(config.aws.local_log_folder, config.event_name)
    with create_session() as session:
        runs = session.query(DagRun).filter(
            DagRun.dag_id == dag_id, DagRun.state == "running", DagRun.run_after >= started
        )
        cancelled = []
        for run in runs:
            for instance in ec2.list_run_instances(dag_id, run.run_id):
                submission = database.get_submission(int(ec2_tags.tags_of(instance)[ec2_tags.SUBMISSION_ID]))
                terminate_recorded(ec2, instance, ledger, "ramp_aws_train", _log, submission=submission)
            owner = RunRef(dag_id, run.run_id)
            for submission_id, _, claimed_by in database.in_flight_claims(config.event_name):
                if claimed_by == owner:
                    with contextlib.suppress(StateTransitionError):
                        database.set_checking_error(submission_id, f"{CANCELLED_BY_OPERATOR}.", owner)
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
    os.environ.update(_airflow_environment(config))
    dag_ids = [dag_id(config.event_name) for dag_id in (training_dag_id, loop_dag_id, housekeeping_dag_id)]
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # This process waits for as long as the event runs: what needs Airflow imported is done in a
        # child that exits within the start-up, so that Airflow's memory is not held all along.
        with local_airflow_setup(dict(os.environ), dag_ids) as setup:
            if setup.report.scheduler_running:
                # Flushed: the command runs for days, its output often a log file or a journal.
                print(
                    f"Training new submissions of {config.event_name} with the running Airflow; Ctrl-C to stop.",
                    flush=True,
                )
                signal.pause()
            else:
                _run_airflow(config, setup)
    except KeyboardInterrupt:
        pass
    return 0


def _run_airflow(config: EventConfig, setup: LocalAirflowSetup) -> None:
    """Start Airflow's components, unpause the DAGs once the API server answers, and watch them until interrupted."""
    report = setup.report
    os.environ.update(report.settings)
    log_folder = Path(report.log_folder)
    print(
        f"No Airflow scheduler is running: starting Airflow's API server (on {report.api_host}), scheduler, "
        f"triggerer and DAG processor; their logs are in {log_folder}."
        + "".join(f"\n  {name}={value}" for name, value in sorted(report.settings.items())),
        flush=True,
    )
    components = Components(dict(os.environ), log_folder)
    try:
        # Starting takes each component seconds of CPU: the two that the first task needs come first,
        # and the DAGs are already serialized, so the DAG processor's first parse is not waited for.
        components.start("api-server", "scheduler")
        components.wait_until_serving(report.execution_api_server_url)
        setup.unpause()
        components.start("triggerer", "dag-processor")
        print(
            f"Training new submissions of {config.event_name}; Airflow's UI: {report.base_url}; Ctrl-C to stop.",
            flush=True,
        )
        while True:
            components.check()
            time.sleep(1)
    finally:
        components.stop()
