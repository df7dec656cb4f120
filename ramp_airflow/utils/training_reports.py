"""What a training job reports from its instance, parsed; and the watcher's side of one training.

Everything here is pure (no I/O): the sensor's poke and the trigger run
:meth:`TrainingWatch.poll_command` however they connect, and hand its output to
:meth:`TrainingWatch.take`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ramp_airflow.utils import training_job
from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.layout import RemoteSubmissionPaths
from ramp_airflow.utils.untrusted_text import clean

# The most of one training's log copied into its task log; the whole log is downloaded after it.
LIVE_LOG_MAX_BYTES = 8 << 20


@dataclass(frozen=True)
class JobStatus:
    """
    What the job record says: ``state`` is ``running``, ``finished`` or ``died``.

    The record is the participant's to forge: it may spoil this submission's own result, nothing
    more. Its time limit is kept on the Airflow side (see the training trigger).
    """

    state: str
    exit_code: int | None = None
    pid: int | None = None

    def outcome(self) -> dict | None:
        """The training wait's outcome for this status, or ``None`` while the training runs."""
        if self.state == ts.FINISHED:
            return {"outcome": ts.FINISHED, "exit_code": self.exit_code}
        if self.state == ts.DIED:
            return {"outcome": ts.DIED}
        return None


def parse_status_line(line: str) -> JobStatus:
    """Parse the first line printed by the poll command; raise ``ValueError`` if garbled."""
    words = line.split()
    try:
        if words[:1] == [ts.FINISHED] and len(words) == 2:
            return JobStatus(ts.FINISHED, exit_code=int(words[1]))
        if words == [ts.DIED]:
            return JobStatus(ts.DIED)
        if words[:1] == [ts.RUNNING] and len(words) == 2:
            return JobStatus(ts.RUNNING, pid=int(words[1]))
    except ValueError:
        pass
    raise ValueError(f"unexpected training status line from the instance: {line!r}")


def parse_poll_output(output: bytes) -> tuple[JobStatus, bytes]:
    """Split the poll command's output into the status and the new log bytes."""
    line, _, chunk = output.partition(b"\n")
    return parse_status_line(line.decode("utf-8", "replace")), chunk


def parse_start_output(output: str) -> tuple[str, int, float]:
    """``(state, pid, started_at)`` from the start command's output; ``state`` is one of ``START_STATES``."""
    words = output.split()
    if len(words) == 3 and words[0] in ts.START_STATES:
        try:
            return words[0], int(words[1]), float(words[2])
        except ValueError:
            pass
    raise ValueError(f"the training job did not record itself on the instance; it printed {output!r}")


@dataclass
class TrainingWatch:
    """
    The watcher's side of one training: the log offset it reached, and what each poll means.

    The log lines it shows are the participant's: decoded leniently, cleaned of escape sequences and
    control characters, and no more than ``live_log_max_bytes`` of them, then a line saying so.
    """

    paths: RemoteSubmissionPaths
    log_offset: int = 0
    live_log_max_bytes: int = LIVE_LOG_MAX_BYTES

    def poll_command(self, wait_secs: float = 0) -> str:
        """
        The remote command of the next poll (status, then the log from the offset reached).

        It waits up to ``wait_secs`` for the training to end.
        """
        max_bytes = max(0, min(training_job.LOG_CHUNK_MAX_BYTES, self.live_log_max_bytes - self.log_offset))
        return training_job.poll_command(self.paths, self.log_offset, wait_secs, max_bytes=max_bytes)

    def kill_command(self) -> str:
        """The remote command that ends the training's process group."""
        return training_job.kill_command(self.paths)

    def take(self, output: bytes) -> tuple[list[str], dict | None]:
        """
        ``(new log lines, outcome or None)`` from a poll's output; advances the log offset.

        Lines are shown whole: a partial last line waits for the next poll, unless the
        training is over (or the chunk is one full read without a newline).
        """
        status, chunk = parse_poll_output(output)
        was_open = self.log_offset < self.live_log_max_bytes
        chunk = chunk[: max(0, self.live_log_max_bytes - self.log_offset)]
        last_newline = chunk.rfind(b"\n")
        full_read = len(chunk) >= training_job.LOG_CHUNK_MAX_BYTES
        at_cap = self.log_offset + len(chunk) >= self.live_log_max_bytes
        if (status.state != ts.RUNNING and not full_read) or ((full_read or at_cap) and last_newline < 0):
            shown = chunk  # the log is complete, or one huge line would stall the offset
        else:
            shown = chunk[: last_newline + 1]
        self.log_offset += len(shown)
        lines = [clean(line) for line in shown.decode("utf-8", "replace").splitlines()]
        if was_open and self.log_offset >= self.live_log_max_bytes:
            lines.append(f"[the rest of the training log is not copied here: over {self.live_log_max_bytes} bytes]")
        return lines, status.outcome()
