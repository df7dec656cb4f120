"""Pure builders of every command run on (or against) a training instance, and their parsers.

Every piece is quoted (``shlex.quote``/argv lists) and every path comes from the submission
id through :mod:`ramp_airflow.utils.layout`, so no participant-chosen text reaches a shell.
Remote scripts run under ``bash -c`` (the training under ``bash -lc``, whose login
environment finds ``ramp-test`` on the seed's AMIs) and use paths relative to the instance
user's home, where SSH sessions start.

The training job leaves its record in ``<sub>/training_job/``: ``started_at`` (remote unix
time), ``pid`` (the job's process group: it runs under ``setsid``) and, once training ended,
``exit_code`` (written to a temporary file then renamed, so readers never see half of it).
Record present and group alive: running; ``exit_code`` present: finished; neither: died.
The starter takes ``flock`` on ``<sub>/.training.lock`` and the detached job inherits it, so
the lock is held exactly as long as any process of a training lives: a second start (a task
retry) finds it held and reports the running job instead of starting another one.

The provider's ``ssh/utils/remote_job.py`` keeps its record in ``/tmp`` with no lock, no
working directory and no login shell, so this small wrapper is our own.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
import shlex
from dataclasses import dataclass

from ramp_airflow.utils import layout

# rsync exit codes worth another attempt: socket/protocol I/O, partial transfer, timeouts,
# and ssh's own 255 (connection failed or dropped).
RSYNC_TRANSIENT_EXIT_CODES = frozenset({10, 12, 23, 30, 35, 255})
LOG_CHUNK_MAX_BYTES = 1 << 20
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]]+$")


def check_address(address: str) -> str:
    """Return ``address`` if it is a plain host name or IP address, else raise ``ValueError``."""
    if not isinstance(address, str) or not _ADDRESS.match(address) or address.startswith("-"):
        raise ValueError(f"address must be an instance's IP address or host name, not {address!r}")
    return address


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """An OpenSSH ``known_hosts`` line pinning ``host_key`` (``"<type> <base64>"``) for host:port."""
    key_type, key_data = host_key.split()[:2]
    pattern = host if port == 22 else f"[{host}]:{port}"
    return f"{pattern} {key_type} {key_data}"


def ssh_argv(key_path: str, port: int, known_hosts_file: str, connect_timeout: int = 30) -> list[str]:
    """``ssh`` that uses only this key and only accepts the host keys in ``known_hosts_file``."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        key_path,
        "-p",
        str(port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts_file}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
    ]


def rsync_argv(rsh: list[str], sources: list[str], destination: str) -> list[str]:
    """``rsync`` of ``sources`` (all local, or all on one host) to ``destination`` over ``rsh``."""
    return ["rsync", "--archive", "--partial", "--timeout=300", "-e", shlex.join(rsh), "--", *sources, destination]


def remote_spec(user: str, address: str, path: str) -> str:
    """rsync's ``user@host:path`` (IPv6 addresses bracketed)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{user}@{host}:{path}"


def _bash(script: str) -> str:
    return shlex.join(["bash", "-c", script])


def _paths(kit: str, submission_id: int) -> dict[str, str]:
    sub = layout.remote_submission_dir(kit, submission_id)
    job = posixpath.join(sub, layout.JOB_DIR)
    return {
        "kit": layout.remote_kit_folder(kit),
        "sub": sub,
        "job": job,
        "pid": posixpath.join(job, layout.JOB_PID),
        "started": posixpath.join(job, layout.JOB_STARTED_AT),
        "exit": posixpath.join(job, layout.JOB_EXIT_CODE),
        "run_key": posixpath.join(job, layout.JOB_RUN_KEY),
        "log": posixpath.join(sub, layout.LOG_FILE),
        "lock": posixpath.join(sub, layout.JOB_LOCK),
    }


def prepare_upload_command(kit: str, submission_id: int) -> str:
    """Create the submission's folder on the instance (rsync creates only the last level)."""
    return shlex.join(["mkdir", "-p", "--", layout.remote_submission_dir(kit, submission_id)])


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


def _job_script(p: dict[str, str], argv: list[str]) -> str:
    q = {k: shlex.quote(v) for k, v in p.items()}
    return (
        f"date +%s.%N > {q['started']}\n"
        f'printf %s "$$" > {q["pid"]}.tmp && mv -f {q["pid"]}.tmp {q["pid"]}\n'
        # Unbuffered, so that the log shows each line as ramp-test prints it.
        f"(cd {q['kit']} && export PYTHONUNBUFFERED=1 && exec {shlex.join(argv)}) < /dev/null >> {q['log']} 2>&1\n"
        "ec=$?\n"
        f'printf %s "$ec" > {q["exit"]}.tmp && mv -f {q["exit"]}.tmp {q["exit"]}\n'
    )


def start_command(
    kit: str, submission_id: int, argv: list[str], run_key: str | None = None, wait_secs: int = 30
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
    p = _paths(kit, submission_id)
    q = {k: shlex.quote(v) for k, v in p.items()}
    earlier = " ".join(shlex.quote(posixpath.join(p["sub"], name)) for name in layout.OUTPUTS)
    job = shlex.quote(_job_script(p, argv))
    ended = record_key = ""
    if run_key is not None:
        # A digest: whatever the run id holds, the remote script sees only hex digits.
        key = shlex.quote(hashlib.sha256(run_key.encode()).hexdigest())
        ended = (
            f'if [ -s {q["exit"]} ] && [ "$(cat {q["run_key"]} 2>/dev/null)" = {key} ]; then\n'
            f"  echo ended $(cat {q['pid']} 2>/dev/null) $(cat {q['started']} 2>/dev/null); exit 0\n"
            "fi\n"
        )
        record_key = f"printf %s {key} > {q['run_key']} || exit 1\n"
    script = (
        "set -u\n"
        f"exec 9>> {q['lock']}\n"
        "if ! flock -n 9; then\n"
        f"  echo running $(cat {q['pid']} 2>/dev/null) $(cat {q['started']} 2>/dev/null); exit 0\n"
        "fi\n"
        f"{ended}"
        f"rm -rf -- {earlier} {q['job']} && mkdir -- {q['job']} || exit 1\n"
        f"{record_key}"
        f"setsid nohup bash -lc {job} < /dev/null > /dev/null 2>&1 &\n"
        f"for i in $(seq {wait_secs * 10}); do [ -s {q['pid']} ] && break; sleep 0.1; done\n"
        f"echo started $(cat {q['pid']} 2>/dev/null) $(cat {q['started']} 2>/dev/null)\n"
    )
    return _bash(script)


def _alive(q: dict[str, str]) -> str:
    return f'[ -s {q["pid"]} ] && kill -0 -- "-$(cat {q["pid"]})" 2>/dev/null'


def _wait_script(q: dict[str, str], wait_secs: float, timeout_secs: float | None) -> str:
    """
    Wait on the instance, up to ``wait_secs``, while the job runs and is within its timeout:
    its end (or its overrun) is seen within a second.
    """
    checks = int(wait_secs * 2)
    if checks <= 0:
        return ""
    overrun = ""
    if timeout_secs is not None:
        # Whole seconds, rounded so that a break always means the timeout has passed.
        limit = math.ceil(timeout_secs)
        overrun = f's=$(cat {q["started"]} 2>/dev/null) && [ "$(date +%s)" -gt $(( ${{s%.*}} + {limit} )) ] && break; '
    return f"for i in $(seq {checks}); do [ -s {q['exit']} ] && break; {_alive(q)} || break; {overrun}sleep 0.5; done\n"


def _status_script(q: dict[str, str]) -> str:
    alive = _alive(q)
    # exit_code is checked again after the liveness test: the job may end between the two.
    return (
        f"if [ -s {q['exit']} ]; then echo finished $(cat {q['exit']})\n"
        f"elif {alive}; then echo running $(cat {q['pid']}) $(date +%s.%N) $(cat {q['started']})\n"
        f"elif [ -s {q['exit']} ]; then echo finished $(cat {q['exit']})\n"
        "else echo died; fi\n"
    )


def poll_command(
    kit: str,
    submission_id: int,
    log_offset: int,
    wait_secs: float = 0,
    timeout_secs: float | None = None,
    max_bytes: int = LOG_CHUNK_MAX_BYTES,
) -> str:
    """
    One status line (see :func:`parse_poll_output`), then the log from ``log_offset`` on.

    With ``wait_secs``, the command first waits that long at most for the job to end or to run
    past ``timeout_secs``, so that a watcher polling every ``wait_secs`` learns of either at once
    rather than at its next poll.
    """
    q = {k: shlex.quote(v) for k, v in _paths(kit, submission_id).items()}
    tail = f"tail -c +{int(log_offset) + 1} {q['log']} 2>/dev/null | head -c {int(max_bytes)}"
    return _bash(_wait_script(q, wait_secs, timeout_secs) + _status_script(q) + tail + "\nexit 0\n")


def kill_command(kit: str, submission_id: int, grace_secs: int = 10) -> str:
    """Terminate the job's process group (TERM, then KILL); prints ``gone`` or ``alive``."""
    pid = shlex.quote(_paths(kit, submission_id)["pid"])
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


def existing_outputs_command(kit: str, submission_id: int) -> str:
    """Print which of ``training_output``, ``log`` and ``mprof.dat`` exist, one a line."""
    sub = shlex.quote(layout.remote_submission_dir(kit, submission_id))
    names = " ".join(shlex.quote(n) for n in layout.OUTPUTS)
    return _bash(f'cd {sub} 2>/dev/null || exit 0\nfor f in {names}; do [ -e "$f" ] && echo "$f"; done\nexit 0\n')


@dataclass(frozen=True)
class JobStatus:
    """What the job record says: ``state`` is ``running``, ``finished`` or ``died``."""

    state: str
    exit_code: int | None = None
    pid: int | None = None
    elapsed_secs: float | None = None

    def outcome(self, training_timeout_secs: float | None = None) -> dict | None:
        """The sensor's result for this status, or ``None`` while training should go on."""
        if self.state == "finished":
            return {"outcome": "finished", "exit_code": self.exit_code}
        if self.state == "died":
            return {"outcome": "died"}
        if training_timeout_secs is not None and (self.elapsed_secs or 0.0) > training_timeout_secs:
            return {"outcome": "timeout", "after_secs": float(self.elapsed_secs)}
        return None


def parse_status_line(line: str) -> JobStatus:
    """Parse the first line printed by :func:`poll_command`; raise ``ValueError`` if garbled."""
    words = line.split()
    try:
        if words[:1] == ["finished"] and len(words) == 2:
            return JobStatus("finished", exit_code=int(words[1]))
        if words == ["died"]:
            return JobStatus("died")
        if words[:1] == ["running"] and len(words) == 4:
            return JobStatus("running", pid=int(words[1]), elapsed_secs=max(0.0, float(words[2]) - float(words[3])))
    except ValueError:
        pass
    raise ValueError(f"unexpected training status line from the instance: {line!r}")


def parse_poll_output(output: bytes) -> tuple[JobStatus, bytes]:
    """Split :func:`poll_command`'s output into the status and the new log bytes."""
    line, _, chunk = output.partition(b"\n")
    return parse_status_line(line.decode("utf-8", "replace")), chunk


START_STATES = ("started", "running", "ended")


def parse_start_output(output: str) -> tuple[str, int, float]:
    """``(state, pid, started_at)`` from :func:`start_command`'s output; ``state`` is one of :data:`START_STATES`."""
    words = output.split()
    if len(words) == 3 and words[0] in START_STATES:
        try:
            return words[0], int(words[1]), float(words[2])
        except ValueError:
            pass
    raise ValueError(f"the training job did not record itself on the instance; it printed {output!r}")


@dataclass
class TrainingWatch:
    """
    The watcher's side of one training: the log offset it reached, and what each poll means.

    Pure (no I/O), shared by the sensor's ``poke`` and the trigger: they run
    :meth:`poll_command` however they connect, and hand its output to :meth:`take`.
    """

    remote_ramp_kit_folder: str
    submission_id: int
    training_timeout_secs: float | None = None
    log_offset: int = 0

    def poll_command(self, wait_secs: float = 0) -> str:
        """
        The remote command of the next poll (status, then the log from the offset reached).

        It waits up to ``wait_secs`` for the training to end, but not past its timeout.
        """
        return poll_command(
            self.remote_ramp_kit_folder, self.submission_id, self.log_offset, wait_secs, self.training_timeout_secs
        )

    def kill_command(self) -> str:
        """The remote command that ends the training's process group."""
        return kill_command(self.remote_ramp_kit_folder, self.submission_id)

    def take(self, output: bytes) -> tuple[list[str], dict | None]:
        """
        ``(new log lines, outcome or None)`` from a poll's output; advances the log offset.

        Lines are shown whole: a partial last line waits for the next poll, unless the
        training is over (or the chunk is one full read without a newline).
        """
        status, chunk = parse_poll_output(output)
        last_newline = chunk.rfind(b"\n")
        full_read = len(chunk) >= LOG_CHUNK_MAX_BYTES
        if (status.state != "running" and not full_read) or (full_read and last_newline < 0):
            shown = chunk  # the log is complete, or one huge line would stall the offset
        else:
            shown = chunk[: last_newline + 1]
        self.log_offset += len(shown)
        return shown.decode("utf-8", "replace").splitlines(), status.outcome(self.training_timeout_secs)
