"""Download a training's output and log from its instance and parse them into a result."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc
from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin
from ramp_airflow.utils.training_results import parse_training_results

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook


class FetchResultsOperator(InstanceMixin, BaseOperator):
    """
    Download ``training_output``, ``log`` and ``mprof.dat`` of a submission and parse them.

    Files the instance lacks are not downloaded (and stale local copies are removed), which
    makes the result a training failure naming the file rather than a failed task.

    The instance and how to log in: see :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin`.

    :param local_predictions_folder: where ``training_output`` goes (``submission_<id>/`` inside)
    :param local_log_folder: where ``log`` and ``mprof.dat`` go (``submission_<id>/`` inside)
    :param expected_folds: the event's number of CV folds (templated)
    :return: the dict of :func:`~ramp_airflow.utils.training_results.parse_training_results`
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, "expected_folds")
    ui_color = "#d5f5e3"

    def __init__(self, *, local_predictions_folder: str, local_log_folder: str, expected_folds, **kwargs):
        super().__init__(**kwargs)
        self.local_predictions_folder = local_predictions_folder
        self.local_log_folder = local_log_folder
        self.expected_folds = expected_folds

    def execute(self, context: Context) -> dict:
        return fetch_training_results(
            self.instance_hook(),
            self.remote_ramp_kit_folder,
            self.submission,
            self.local_predictions_folder,
            self.local_log_folder,
            int(self.expected_folds),
            self.log,
        )


def fetch_training_results(
    hook: InstanceSSHHook,
    kit: str,
    submission_id: int,
    local_predictions_folder: str,
    local_log_folder: str,
    expected_folds: int,
    log: logging.Logger,
) -> dict:
    """Download a submission's outputs with ``hook`` and parse them; see :class:`FetchResultsOperator`."""
    remote_sub = layout.remote_submission_dir(kit, submission_id)
    predictions = layout.local_predictions_dir(local_predictions_folder, submission_id)
    log_dir = layout.local_log_dir(local_log_folder, submission_id)
    existing = set(
        hook.check_run(rc.existing_outputs_command(kit, submission_id), "listing the training output").split()
    )
    os.makedirs(log_dir, exist_ok=True)
    downloads = {
        layout.TRAINING_OUTPUT: (f"{remote_sub}/{layout.TRAINING_OUTPUT}/", predictions + "/"),
        layout.LOG_FILE: (f"{remote_sub}/{layout.LOG_FILE}", os.path.join(log_dir, layout.LOG_FILE)),
        layout.MPROF_FILE: (f"{remote_sub}/{layout.MPROF_FILE}", os.path.join(log_dir, layout.MPROF_FILE)),
    }
    for name, (source, destination) in downloads.items():
        if name in existing:
            os.makedirs(os.path.dirname(destination.rstrip("/")), exist_ok=True)
            hook.rsync(source, destination, download=True, delete=name == layout.TRAINING_OUTPUT)
        else:
            log.warning("%s has no %s on the instance", layout.submission_folder(submission_id), name)
            _remove(destination.rstrip("/"))
    result = parse_training_results(submission_id, predictions, log_dir, expected_folds)
    log.info(
        "Training of %s: %s", layout.submission_folder(submission_id), "success" if result["success"] else "failure"
    )
    return result


def _remove(path: str) -> None:
    """Remove a stale local copy (file or folder) of an output the instance no longer has."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
