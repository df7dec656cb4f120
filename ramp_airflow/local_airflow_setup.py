"""
The short-lived child process that does, for ``ramp_aws_train_loop``, all that needs Airflow imported.

The loop command waits for as long as the event runs, and Airflow imported costs a process about
150 MiB: here a child of its own (``python -m ramp_airflow.local_airflow_setup <dag id>...``)
prepares the metadata database, stores the DAGs, pauses them, and reports on one JSON line of its
stdout what the command needs (is a scheduler running, the fitted settings, where to log, where the
API answers). It then waits on its stdin for ``unpause``, which the command sends once the API
server answers, and exits, so its memory is freed within the start-up. With a scheduler already
running, it unpauses at once and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

_UNPAUSE = "unpause\n"
_UNPAUSED = "unpaused\n"


@dataclasses.dataclass(frozen=True)
class Report:
    """What the child found and chose, with the command's environment and the fitted settings applied."""

    scheduler_running: bool
    settings: dict[str, str]  # the fitted ``AIRFLOW__*`` variables to add to the components' environment
    log_folder: str
    api_host: str
    base_url: str
    execution_api_server_url: str


class LocalAirflowSetup:
    """The command's side of the child: its report, and the request to unpause."""

    def __init__(self, child: subprocess.Popen):
        self._child = child
        self.report = Report(**json.loads(self._line()))
        if self.report.scheduler_running:
            child.wait()  # it has unpaused the DAGs and exits

    def unpause(self) -> None:
        """Have the child unpause the DAGs, and wait until it has (it then exits)."""
        with contextlib.suppress(BrokenPipeError):  # a child that has died is reported below
            self._child.stdin.write(_UNPAUSE)
            self._child.stdin.flush()
        self._line()  # _UNPAUSED, once the DAGs are
        self._child.wait()

    def _line(self) -> str:
        """The child's next line; its exit, on an error, ends the command."""
        line = self._child.stdout.readline()
        if not line:
            raise SystemExit(f"Setting up Airflow failed (exit status {self._child.wait()}); its error is above.")
        return line


@contextlib.contextmanager
def local_airflow_setup(env: dict[str, str], dag_ids: list[str]) -> Iterator[LocalAirflowSetup]:
    """Start the child with this environment, for these DAGs; it is stopped on leaving."""
    # Its errors go to the command's stderr, as they would in the command's own process.
    child = subprocess.Popen(
        [sys.executable, "-m", __name__, *dag_ids], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield LocalAirflowSetup(child)
    finally:
        # Nothing it may be doing needs finishing: each of its database writes is a transaction.
        child.terminate()
        child.wait()
        child.stdin.close()
        child.stdout.close()


def main(dag_ids: list[str]) -> NoReturn:
    # Ctrl-C at the terminal reaches the whole process group: the command stops this child itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Airflow logs to stdout: the pipe to the command carries the report alone, Airflow's lines go to stderr.
    report = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Airflow's own lines about the migration and the parse would bury the few the command prints
    # (a level the user set is kept). Airflow reads its settings when first imported, so before that.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from airflow.configuration import conf

    from ramp_airflow import local_airflow

    local_airflow.prepare_metadata_database()
    local_airflow.serialize_dags()
    running = local_airflow.scheduler_running()
    fitted = local_airflow.settings_environment(dict(os.environ))
    # Airflow reads an AIRFLOW__* variable at each conf.get: the values below are the components'.
    os.environ.update(fitted)
    # Runs queued before a stop would start with the scheduler, before the API server answers, and a
    # task that starts before then fails: without a scheduler, the DAGs stay paused until it answers.
    local_airflow.set_paused(dag_ids, not running)
    found = Report(
        scheduler_running=running,
        settings=fitted,
        log_folder=str(Path(conf.get("logging", "base_log_folder")) / "ramp_aws_train_loop"),
        api_host=conf.get("api", "host"),
        base_url=conf.get("api", "base_url"),
        execution_api_server_url=conf.get("core", "execution_api_server_url"),
    )
    print(json.dumps(dataclasses.asdict(found)), file=report, flush=True)
    if not running and sys.stdin.readline() == _UNPAUSE:
        local_airflow.set_paused(dag_ids, False)
        print(_UNPAUSED, end="", file=report, flush=True)
    _exit_at_once()


def _exit_at_once() -> NoReturn:
    """
    Exit without Python's orderly teardown of Airflow's modules: seconds of CPU, while the components
    start on the same cores. The database connections are closed; the kernel frees the rest at once.
    """
    from airflow import settings

    settings.dispose_orm()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
