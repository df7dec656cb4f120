"""Upload a submission to its training instance and start its training there."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc
from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin
from ramp_airflow.utils.training_wait_mixin import WAIT_TEMPLATE_FIELDS, TrainingWaitMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook


class RsyncTrainOperator(TrainingWaitMixin, InstanceMixin, BaseOperator):
    """
    rsync a submission to the instance and start its training there, detached; optionally wait.

    The first contact with the instance: it learns the host key (unless ``host_key`` pins it).
    A retry while the training of the same submission still runs starts nothing and takes that
    training; a retry of this task in the same run after its training ended does not train
    again, and takes that training's end at once, without deferring.

    With ``wait_for_completion``, the task then waits for the training's end (in the triggerer
    when ``deferrable``) and returns its outcome with the fetched results, as
    :class:`~ramp_airflow.sensors.training.TrainingFinishedSensor` does (see
    :class:`~ramp_airflow.utils.training_wait_mixin.TrainingWaitMixin` for the outcomes and their
    parameters): one task instead of two, which saves a task start, billed, before every training.

    The instance and how to log in: see :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin`
    (here ``host_key`` is optional: a key known beforehand, pinned from the start).

    :param ramp_submissions_path: the RAMP server's submissions folder (``events.path_ramp_submissions``)
    :param training_command: the training command's argv; ``--submission <folder> --save-output``
        is appended
    :param memory_profiling: run the training under ``mprof run --include-children``
    :param wait_for_completion: wait for the training's end and fetch its results
    :param poll_interval: seconds between two polls of the wait (``check_finished_training_interval_secs``);
        deferred, each poll waits on the instance up to that long for the end, seen within a second
    :param deferrable: wait in the triggerer rather than in a worker slot
    :return: without waiting, ``{"host_key": "<type> <base64>", "pid": int, "started_at": float}``
        (remote unix time); with it, the outcome (and ``"result"``) plus ``"host_key"``
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, *WAIT_TEMPLATE_FIELDS, "ramp_submissions_path")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        ramp_submissions_path: str,
        training_command: Sequence[str] = ("ramp-test",),
        memory_profiling: bool = False,
        wait_for_completion: bool = False,
        poll_interval: float = 10.0,
        deferrable: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ramp_submissions_path = ramp_submissions_path
        self.training_command = tuple(training_command)
        self.memory_profiling = memory_profiling
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    def execute(self, context: Context) -> dict:
        ti = context.get("ti")
        if self.wait_for_completion and ti is not None and ti.try_number > 1 and self._instance_gone():
            # A retry learns the host key anew: it must not reach whoever holds a lost instance's address.
            return self.conclude({"outcome": "lost"}, hook=None)
        hook = self.instance_hook(pinned=False)
        state, started = self._upload_and_start(hook, _run_key(ti))
        if not self.wait_for_completion:
            return started
        # A training an earlier try ran to its end is concluded now: its trigger would fire at once, which
        # Airflow 3.3.2 can take for a task killed externally (apache/airflow#72716), failing the retry too.
        if not self.deferrable or state == "ended":
            while (outcome := self.poll_training(hook)) is None:
                time.sleep(self.poll_interval)
            return {**self.conclude(outcome, hook), "host_key": hook.host_key}
        self.defer(trigger=self.training_trigger(self.poll_interval, hook.host_key), method_name="execute_complete")

    def execute_complete(self, context: Context, event: Any = None) -> dict:
        outcome = self.outcome_of(event)
        self.host_key = event["host_key"]  # learned by the try that started the training
        return {**self.conclude(outcome, self.instance_hook()), "host_key": self.host_key}

    def _upload_and_start(self, hook: InstanceSSHHook, run_key: str | None) -> tuple[str, dict]:
        submission_id = self.submission
        source = layout.local_submission_dir(self.ramp_submissions_path, submission_id)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source} does not exist: check ramp_submissions_path and submission_id")
        kit, folder = self.remote_ramp_kit_folder, layout.submission_folder(submission_id)
        argv = rc.training_argv(submission_id, self.training_command, self.memory_profiling)
        with hook.held_connection():
            hook.check_run(rc.prepare_upload_command(kit, submission_id), "creating the submission folder")
            hook.rsync(source + "/", layout.remote_submission_dir(kit, submission_id) + "/", download=False)
            started = hook.check_run(rc.start_command(kit, submission_id, argv, run_key), "starting the training")
        state, pid, started_at = rc.parse_start_output(started)
        if state == "started":
            self.log.info("Training of %s started on %s: pid %s", folder, self.address, pid)
        elif state == "running":
            self.log.warning(
                "A training of %s was already running on %s (pid %s); not starting another", folder, self.address, pid
            )
        else:
            self.log.warning(
                "This task already trained %s on %s (pid %s), which ended; not training again",
                folder,
                self.address,
                pid,
            )
        return state, {"host_key": hook.host_key, "pid": pid, "started_at": started_at}


def _run_key(ti) -> str | None:
    """Who starts the training: this task of this run, whatever its try (None outside a run)."""
    if ti is None:
        return None
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"
