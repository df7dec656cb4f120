"""
The Airflow that ``ramp_aws_train_loop`` runs on this machine when no scheduler is running.

An organiser who follows the seed installs Airflow and runs the loop command: no airflow.cfg of
theirs, Airflow's SQLite file, and Airflow's defaults, which suit a large server (LocalExecutor
forks 32 task processes at start). Here a setting left at Airflow's default gets a value fitted to
this machine, while one the user set (in airflow.cfg or an ``AIRFLOW__*`` variable) is kept; the
metadata database is prepared and the event's DAGs serialized by these functions in one Python
process (``local_airflow_setup``'s), because every Airflow command costs seconds of start-up; then
the four components start side by side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import psutil


def fitted_settings(cpus: int, api_port: str = "8080") -> dict[tuple[str, str], str]:
    """The settings ramp-airflow gives an Airflow that trains one event on ``cpus`` cores of this machine."""
    return {
        # Trainings wait in the triggerer, not in task slots: what needs a slot is short task
        # processes of about a CPU second each, so slots beyond a few per core only contend (and
        # each LocalExecutor slot is a process forked at start).
        ("core", "parallelism"): str(max(4, 4 * cpus)),
        # The scheduler sleeps up to this long after every pass that queued nothing, and a submission's
        # path crosses a dozen such passes: at 0.2 s one submission's overhead fell from 18 to 13.5 s,
        # for about 5 CPU seconds a minute more while idle (benchmarks/README.md).
        ("scheduler", "scheduler_idle_sleep_time"): "0.2",
        # A task that defers is seen to have deferred at its supervisor's next heartbeat; a trigger that
        # fires before that fails the task (apache/airflow#72716) and costs a retry.
        ("workers", "min_heartbeat_interval"): "1",
        # The API server and its UI are for this machine only, and the tasks reach it there.
        ("api", "host"): "127.0.0.1",
        ("api", "base_url"): f"http://127.0.0.1:{api_port}",
        ("core", "execution_api_server_url"): f"http://127.0.0.1:{api_port}/execution/",
    }


def environment_variable(section: str, key: str) -> str:
    return f"AIRFLOW__{section.upper()}__{key.upper()}"


def settings_environment(env: dict[str, str], cpus: int | None = None) -> dict[str, str]:
    """
    The ``AIRFLOW__*`` variables to add to ``env``: the fitted settings the user left at Airflow's
    default. Reads the user's airflow.cfg, so Airflow must not have been imported before ``env``
    was applied to this process.
    """
    from airflow.configuration import conf

    chosen = {}
    for (section, key), value in fitted_settings(cpus or os.cpu_count() or 1, conf.get("api", "port")).items():
        variable = environment_variable(section, key)
        if variable not in env and conf.get(section, key, fallback=None) == conf.get_default_value(section, key):
            chosen[variable] = value
    return chosen


def prepare_metadata_database() -> None:
    """
    Write a missing airflow.cfg, as Airflow's CLI does before any command (it holds the secrets that
    every component must share), then create or upgrade the metadata database; an SQLite file is
    switched to write-ahead logging.
    """
    from airflow.configuration import write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    from airflow import settings
    from airflow.utils import db

    db.initdb()
    url = settings.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        # With the default rollback journal, one writer blocks every reader of the file; with the
        # write-ahead log readers go on while the scheduler, the API server and the triggerer write.
        # The mode is stored in the file, so this one switch holds for every component.
        with contextlib.closing(sqlite3.connect(url.database)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


def scheduler_running() -> bool:
    """Whether a live scheduler heartbeats into this metadata database."""
    from airflow.jobs.job import Job, JobState
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        jobs = session.scalars(select(Job).where(Job.state == JobState.RUNNING, Job.job_type == "SchedulerJob"))
        return any(job.is_alive() for job in jobs)


def serialize_dags() -> None:
    """Parse the DAG bundles and store the DAGs, as ``airflow dags reserialize`` does, so none waits for a parse."""
    from airflow.dag_processing.bundles.base import unpack_bundle_version
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        version, version_data = unpack_bundle_version(bundle.get_current_version(), bundle)
        with create_session() as session:
            sync_bag_to_db(bag, bundle.name, bundle_version=version, version_data=version_data, session=session)


def set_paused(dag_ids: Iterable[str], paused: bool) -> None:
    """Pause or unpause these DAGs."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id.in_(list(dag_ids))).values(is_paused=paused))


_AIRFLOW_MAIN = "from airflow.__main__ import main; main()"
# LocalExecutor runs each task in a process forked from a worker that the scheduler forked at start:
# what the scheduler has imported by then, no task imports again. The hooks pull in boto3, the
# postgres and ssh providers and paramiko, a few tenths of a CPU second in every task otherwise.
_PRELOADED = {
    "scheduler": "import ramp_airflow.dag_factory, ramp_airflow.hooks.ec2, ramp_airflow.hooks.ramp_database, "
    "ramp_airflow.hooks.instance_ssh; ",
}


class Components:
    """
    Airflow's components, started as ``airflow <name>`` in one process group of their own (its id
    is the first one's pid), each writing to ``<log_folder>/<name>.log``.
    """

    def __init__(self, env: dict[str, str], log_folder: Path):
        self.env = env
        self.log_folder = log_folder
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, *names: str) -> None:
        self.log_folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            with open(self.log_folder / f"{name}.log", "ab") as log:
                self.started[name] = subprocess.Popen(
                    [sys.executable, "-c", _PRELOADED.get(name, "") + _AIRFLOW_MAIN, name],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Outside the terminal's group, so that Ctrl-C reaches the loop command alone,
                    # which then stops them all.
                    process_group=self._group() or 0,
                )

    def _group(self) -> int | None:
        """The components' process group: the first one's pid (None before any has started)."""
        return next(iter(self.started.values())).pid if self.started else None

    def check(self) -> None:
        """Fail, naming the component and its log, when one has exited."""
        for name, proc in self.started.items():
            if proc.poll() is not None:
                raise SystemExit(f"airflow {name} exited ({proc.returncode}); see {self.log_folder / name}.log")

    def wait_until_serving(self, url: str, timeout: float = 180) -> None:
        """Wait, bounded, until the execution API at ``url`` answers its health check."""
        health = url.rstrip("/") + "/health"
        # Never through a proxy the environment may name: this is Airflow's own API server.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                with opener.open(health, timeout=5):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"Airflow's API server did not answer on {health} within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> None:
        """Stop the group, with everything the components started: TERM, a bounded wait, then KILL."""
        group = self._group()
        if group is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            deadline = time.monotonic() + timeout
            while _group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _group_alive(group):
                break
        for proc in self.started.values():
            proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process group still has a running member (zombies do not count)."""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False
