"""Pure builders of the remote commands that start, watch and stop one training job on its instance.

Every piece is quoted (``shlex.quote``/argv lists) and every path comes from the submission id
through :class:`~ramp_airflow.utils.layout.RemoteSubmissionPaths`, so no participant-chosen text
reaches a shell. Remote scripts run under ``bash -c`` (the training under ``bash -lc``, whose
login environment finds ``ramp-test`` on the seed's AMIs) and use paths relative to the
instance user's home, where SSH sessions start.

The job leaves its record in ``<sub>/training_job/``: ``started_at`` (remote unix time),
``pid`` (the job's process group: it runs under ``setsid``) and, once training ended,
``exit_code`` (written to a temporary file then renamed, so readers never see half of it).
Record present and group alive: running; ``exit_code`` present: finished; neither: died.
The starter takes ``flock`` on ``<sub>/.training.lock`` and the detached job inherits it, so
the lock is held exactly as long as any process of a training lives: a second start (a task
retry) finds it held and reports the running job instead of starting another one.
What the commands print is parsed by :mod:`ramp_airflow.utils.training_reports`.

The ssh provider's ``ssh/utils/remote_job.py`` keeps its record in ``/tmp`` with no lock, no
working directory and no login shell, so this small wrapper is our own.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex

from ramp_airflow.utils import layout
from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.layout import RemoteSubmissionPaths

# The most log bytes one poll brings back.
LOG_CHUNK_MAX_BYTES = 1 << 20


def _bash(script: str) -> str:
    return shlex.join(["bash", "-c", script])


def _quoted(paths: RemoteSubmissionPaths) -> dict[str, str]:
    names = ("kit", "submission", "job", "pid", "started_at", "exit_code", "run_key", "log", "lock")
    return {name: shlex.quote(getattr(paths, name)) for name in names}


def prepare_upload_command(paths: RemoteSubmissionPaths) -> str:
    """Create the submission's folder on the instance (rsync creates only the last level)."""
    return shlex.join(["mkdir", "-p", "--", paths.submission])


def training_argv(
    submission_id: int, training_command: tuple[str, ...] = ("ramp-test",), memory_profiling: bool = False
) -> list[str]:
    """The training command, run in the kit folder, optionally under ``mprof``."""
    folder = layout.submission_folder(submission_id)
    argv = [*training_command, "--submission", folder, "--save-output"]
    if memory_profiling:
        mprof_out = posixpath.join(layout.SUBMISSIONS, folder, layout.MPROF_FILE)
        argv = ["mprof", "run", "--include-children", f"--output={mprof_out}", *argv]
    return argv


def _job_script(q: dict[str, str], argv: list[str]) -> str:
    return (
        f"date +%s.%N > {q['started_at']}\n"
        f'printf %s "$$" > {q["pid"]}.tmp && mv -f {q["pid"]}.tmp {q["pid"]}\n'
        # Unbuffered, so that the log shows each line as ramp-test prints it.
        f"(cd {q['kit']} && export PYTHONUNBUFFERED=1 && exec {shlex.join(argv)}) < /dev/null >> {q['log']} 2>&1\n"
        "ec=$?\n"
        f'printf %s "$ec" > {q["exit_code"]}.tmp && mv -f {q["exit_code"]}.tmp {q["exit_code"]}\n'
    )


def _report(state: str, q: dict[str, str]) -> str:
    """Print ``<state> <pid> <started_at>`` from the job record."""
    return f"echo {state} $(cat {q['pid']} 2>/dev/null) $(cat {q['started_at']} 2>/dev/null)"


def start_command(
    paths: RemoteSubmissionPaths, argv: list[str], run_key: str | None = None, wait_secs: int = 30
) -> str:
    """
    Clear the submission's earlier output and start ``argv`` detached, unless a training runs.

    Prints ``started <pid> <started_at>``, or ``running <pid> <started_at>`` when a training of
    this submission was already running. With ``run_key`` (who starts: a task of one run), a
    training that this same key started and that has ended is not started again: it prints
    ``ended <pid> <started_at>`` and leaves its output for the retried task to fetch. Nothing is
    touched in either of those cases. The job runs in its own session (``setsid``), in the login
    environment, with the lock inherited on fd 9.
    """
    q = _quoted(paths)
    earlier = " ".join(shlex.quote(path) for path in paths.outputs)
    job = shlex.quote(_job_script(q, argv))
    ended = record_key = ""
    if run_key is not None:
        # A digest: whatever the run id holds, the remote script sees only hex digits.
        key = shlex.quote(hashlib.sha256(run_key.encode()).hexdigest())
        ended = (
            f'if [ -s {q["exit_code"]} ] && [ "$(cat {q["run_key"]} 2>/dev/null)" = {key} ]; then\n'
            f"  {_report(ts.ENDED, q)}; exit 0\n"
            "fi\n"
        )
        record_key = f"printf %s {key} > {q['run_key']} || exit 1\n"
    script = (
        "set -u\n"
        f"exec 9>> {q['lock']}\n"
        "if ! flock -n 9; then\n"
        f"  {_report(ts.RUNNING, q)}; exit 0\n"
        "fi\n"
        f"{ended}"
        f"rm -rf -- {earlier} {q['job']} && mkdir -- {q['job']} || exit 1\n"
        f"{record_key}"
        f"setsid nohup bash -lc {job} < /dev/null > /dev/null 2>&1 &\n"
        f"for i in $(seq {wait_secs * 10}); do [ -s {q['pid']} ] && break; sleep 0.1; done\n"
        f"{_report(ts.STARTED, q)}\n"
    )
    return _bash(script)


def _alive(q: dict[str, str]) -> str:
    return f'[ -s {q["pid"]} ] && kill -0 -- "-$(cat {q["pid"]})" 2>/dev/null'


def _wait_script(q: dict[str, str], wait_secs: float) -> str:
    """Wait on the instance, up to ``wait_secs``, while the job runs: its end is seen within a second."""
    checks = int(wait_secs * 2)
    if checks <= 0:
        return ""
    return f"for i in $(seq {checks}); do [ -s {q['exit_code']} ] && break; {_alive(q)} || break; sleep 0.5; done\n"


def _status_script(q: dict[str, str]) -> str:
    finished = f"echo {ts.FINISHED} $(cat {q['exit_code']})"
    # exit_code is checked again after the liveness test: the job may end between the two.
    return (
        f"if [ -s {q['exit_code']} ]; then {finished}\n"
        f"elif {_alive(q)}; then echo {ts.RUNNING} $(cat {q['pid']})\n"
        f"elif [ -s {q['exit_code']} ]; then {finished}\n"
        f"else echo {ts.DIED}; fi\n"
    )


def poll_command(
    paths: RemoteSubmissionPaths, log_offset: int, wait_secs: float = 0, max_bytes: int = LOG_CHUNK_MAX_BYTES
) -> str:
    """
    One status line (see :func:`~ramp_airflow.utils.training_reports.parse_poll_output`), then the
    log from ``log_offset`` on, at most ``max_bytes`` of it.

    With ``wait_secs``, the command first waits that long at most for the job to end, so that a
    watcher polling every ``wait_secs`` learns of it at once rather than at its next poll. A log that
    is not a regular file (a named pipe would block the read) is not read.
    """
    q = _quoted(paths)
    tail = (
        f"[ -f {q['log']} ] && [ ! -h {q['log']} ] && "
        f"tail -c +{int(log_offset) + 1} {q['log']} 2>/dev/null | head -c {int(max_bytes)}"
    )
    return _bash(_wait_script(q, wait_secs) + _status_script(q) + tail + "\nexit 0\n")


def kill_command(paths: RemoteSubmissionPaths, grace_secs: int = 10) -> str:
    """Terminate the job's process group (TERM, then KILL); prints ``gone`` or ``alive``."""
    pid = shlex.quote(paths.pid)
    gone = f'for i in $(seq {grace_secs * 5}); do kill -0 -- "-$p" 2>/dev/null || {{ echo gone; exit 0; }}; sleep 0.2; done'
    script = (
        f"p=$(cat {pid} 2>/dev/null)\n"
        # A corrupt pid of 0 or 1 would turn kill -<pid> into a broadcast.
        'case "$p" in ""|*[!0-9]*|0|1) echo gone; exit 0;; esac\n'
        f'kill -TERM -- "-$p" 2>/dev/null\n{gone}\n'
        f'kill -KILL -- "-$p" 2>/dev/null\n{gone}\n'
        "echo alive\n"
    )
    return _bash(script)


def existing_outputs_command(paths: RemoteSubmissionPaths) -> str:
    """Print which of ``training_output``, ``log`` and ``mprof.dat`` exist, one a line."""
    names = " ".join(shlex.quote(n) for n in layout.OUTPUTS)
    script = f'cd {shlex.quote(paths.submission)} 2>/dev/null || exit 0\nfor f in {names}; do [ -e "$f" ] && echo "$f"; done\nexit 0\n'
    return _bash(script)
