"""Upload a submission to its training instance and start its training there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc
from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


class RsyncTrainOperator(InstanceMixin, BaseOperator):
    """
    rsync a submission to the instance, then start its training there, detached.

    The first contact with the instance: it learns the host key (unless ``host_key`` pins it)
    and returns it for every later task. A retry while the training of the same submission
    still runs starts nothing and returns that training.

    The instance and how to log in: see :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin`
    (here ``host_key`` is optional: a key known beforehand, pinned from the start).

    :param ramp_submissions_path: the RAMP server's submissions folder (``events.path_ramp_submissions``)
    :param training_command: the training command's argv; ``--submission <folder> --save-output``
        is appended
    :param memory_profiling: run the training under ``mprof run --include-children``
    :return: ``{"host_key": "<type> <base64>", "pid": int, "started_at": float}`` (remote unix time)
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, "ramp_submissions_path")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        ramp_submissions_path: str,
        training_command: Sequence[str] = ("ramp-test",),
        memory_profiling: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ramp_submissions_path = ramp_submissions_path
        self.training_command = tuple(training_command)
        self.memory_profiling = memory_profiling

    def execute(self, context: Context) -> dict:
        submission_id = self.submission
        source = layout.local_submission_dir(self.ramp_submissions_path, submission_id)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source} does not exist: check ramp_submissions_path and submission_id")
        kit = self.remote_ramp_kit_folder
        hook = self.instance_hook(pinned=False)
        hook.check_run(rc.prepare_upload_command(kit, submission_id), "creating the submission folder")
        hook.rsync(source + "/", layout.remote_submission_dir(kit, submission_id) + "/", download=False)
        argv = rc.training_argv(submission_id, self.training_command, self.memory_profiling)
        started_now, pid, started_at = rc.parse_start_output(
            hook.check_run(rc.start_command(kit, submission_id, argv), "starting the training")
        )
        if started_now:
            self.log.info(
                "Training of %s started on %s: pid %s", layout.submission_folder(submission_id), self.address, pid
            )
        else:
            self.log.warning(
                "A training of %s was already running on %s (pid %s); not starting another",
                layout.submission_folder(submission_id),
                self.address,
                pid,
            )
        return {"host_key": hook.host_key, "pid": pid, "started_at": started_at}
