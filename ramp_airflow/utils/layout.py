"""Where a submission's files live: on the RAMP server, on the instance and in the local folders.

Every path of the training path is derived here, from the submission id, so that no
participant-chosen name ever becomes part of a path or a command.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

SUBMISSIONS = "submissions"  # in the kit folder
TRAINING_OUTPUT = "training_output"
LOG_FILE = "log"
MPROF_FILE = "mprof.dat"
# What a training leaves in the submission dir, downloaded after it and cleared before the next.
OUTPUTS = (TRAINING_OUTPUT, LOG_FILE, MPROF_FILE)
# The remote training job's record, inside the submission dir (see utils/training_job.py).
JOB_DIR = "training_job"
JOB_PID = "pid"
JOB_STARTED_AT = "started_at"
JOB_EXIT_CODE = "exit_code"
# Which run's task started the job: its retry finds the training it started, even once ended.
JOB_RUN_KEY = "run_key"
# Never deleted: a lock on a re-created file would not exclude a holder of the old one.
JOB_LOCK = ".training.lock"


def submission_folder(submission_id: int) -> str:
    """The folder name RAMP gives a submission, e.g. ``submission_000000042``."""
    if isinstance(submission_id, bool) or not isinstance(submission_id, int) or submission_id < 0:
        raise ValueError(f"submission id must be a non-negative integer, not {submission_id!r}")
    return f"submission_{submission_id:09d}"


def remote_kit_folder(remote_ramp_kit_folder: str) -> str:
    """
    The kit folder as a path that needs no shell expansion on the instance.

    The seed writes ``~/ramp-kits/iris``; SSH sessions and rsync start in the user's home,
    so the same folder is the relative path ``ramp-kits/iris``, which can be quoted safely.
    """
    if remote_ramp_kit_folder == "~":
        return "."
    if remote_ramp_kit_folder.startswith("~/"):
        return remote_ramp_kit_folder[2:].lstrip("/") or "."
    return remote_ramp_kit_folder


def remote_submission_dir(remote_ramp_kit_folder: str, submission_id: int) -> str:
    """``<kit>/submissions/submission_{id:09d}`` on the instance."""
    return posixpath.join(remote_kit_folder(remote_ramp_kit_folder), SUBMISSIONS, submission_folder(submission_id))


@dataclass(frozen=True)
class RemoteSubmissionPaths:
    """
    Every path of one submission's training on its instance, relative to the login user's home.

    Built once from the kit folder and the submission id, and handed to every command builder,
    so that a path is spelled in one place and no participant-chosen name enters it.
    """

    remote_ramp_kit_folder: str
    submission_id: int

    @property
    def kit(self) -> str:
        return remote_kit_folder(self.remote_ramp_kit_folder)

    @property
    def submission(self) -> str:
        return remote_submission_dir(self.remote_ramp_kit_folder, self.submission_id)

    @property
    def job(self) -> str:
        return posixpath.join(self.submission, JOB_DIR)

    @property
    def pid(self) -> str:
        return posixpath.join(self.job, JOB_PID)

    @property
    def started_at(self) -> str:
        return posixpath.join(self.job, JOB_STARTED_AT)

    @property
    def exit_code(self) -> str:
        return posixpath.join(self.job, JOB_EXIT_CODE)

    @property
    def run_key(self) -> str:
        return posixpath.join(self.job, JOB_RUN_KEY)

    @property
    def log(self) -> str:
        return posixpath.join(self.submission, LOG_FILE)

    @property
    def lock(self) -> str:
        return posixpath.join(self.submission, JOB_LOCK)

    @property
    def outputs(self) -> tuple[str, ...]:
        """What a training leaves, cleared before the next one."""
        return tuple(posixpath.join(self.submission, name) for name in OUTPUTS)


def local_submission_dir(ramp_submissions_path: str, submission_id: int) -> str:
    """The submission's files on the RAMP server (``events.path_ramp_submissions``)."""
    return posixpath.join(ramp_submissions_path, submission_folder(submission_id))


def local_predictions_dir(local_predictions_folder: str, submission_id: int) -> str:
    """Where the submission's ``training_output`` is downloaded."""
    return posixpath.join(local_predictions_folder, submission_folder(submission_id))


def local_log_dir(local_log_folder: str, submission_id: int) -> str:
    """Where the submission's log and ``mprof.dat`` are downloaded (the hooks' submission folder)."""
    return posixpath.join(local_log_folder, submission_folder(submission_id))


def cost_ledger_file(local_log_folder: str, event_name: str) -> str:
    """
    The event's cost ledger, ``<local_log_folder>/<event>_cost_ledger.csv``.

    In the log folder, which the backend must be able to write to anyway; named after the event, so
    that events sharing a log folder keep apart; never a ``submission_*`` name, so no submission's
    folder can collide with it.
    """
    return posixpath.join(local_log_folder, f"{event_name}_cost_ledger.csv")


def budget_exhausted_marker(local_log_folder: str, event_name: str) -> str:
    """
    ``<local_log_folder>/<event>_budget_exhausted``: there while the event's budget is spent and its
    ``budget_exhausted`` commands have run, so that they run once each time the budget runs out.
    """
    return posixpath.join(local_log_folder, f"{event_name}_budget_exhausted")
