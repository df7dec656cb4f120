"""Download a training's output and log from its instance and parse them into a result."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc
from ramp_airflow.utils.instance_mixin import INSTANCE_TEMPLATE_FIELDS, InstanceMixin
from ramp_airflow.utils.training_results import parse_training_results

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook


class FetchResultsMixin:
    """
    Where a task downloads a training's results to, and how.

    Mixed into :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin` tasks, after it.

    :param local_predictions_folder: where ``training_output`` goes (``submission_<id>/`` inside)
    :param local_log_folder: where ``log`` and ``mprof.dat`` go (``submission_<id>/`` inside)
    :param expected_folds: the event's number of CV folds (templated)
    """

    def __init__(
        self,
        *,
        local_predictions_folder: str | None = None,
        local_log_folder: str | None = None,
        expected_folds: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (local_predictions_folder is None) != (local_log_folder is None):
            raise ValueError("give both local_predictions_folder and local_log_folder, or neither")
        self.local_predictions_folder = local_predictions_folder
        self.local_log_folder = local_log_folder
        self.expected_folds = expected_folds

    def fetch_results(self, hook: InstanceSSHHook) -> dict:
        """
        Download ``training_output``, ``log`` and ``mprof.dat`` with ``hook``, and parse them.

        One transfer brings all three into a folder beside the log, from which each replaces
        its local copy. Files the instance lacks are not downloaded (and stale local copies are
        removed), which makes the result a training failure naming the file rather than a
        failed task.
        """
        kit, submission_id = self.remote_ramp_kit_folder, self.submission
        remote_sub = layout.remote_submission_dir(kit, submission_id)
        predictions = layout.local_predictions_dir(self.local_predictions_folder, submission_id)
        log_dir = layout.local_log_dir(self.local_log_folder, submission_id)
        listed = hook.check_run(rc.existing_outputs_command(kit, submission_id), "listing the training output").split()
        existing = [name for name in layout.OUTPUTS if name in listed]
        os.makedirs(log_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=log_dir) as staging:
            if existing:
                hook.rsync([posixpath.join(remote_sub, name) for name in existing], staging + "/", download=True)
            for name in layout.OUTPUTS:
                destination = predictions if name == layout.TRAINING_OUTPUT else os.path.join(log_dir, name)
                _remove(destination)
                if name in existing:
                    os.makedirs(os.path.dirname(destination), exist_ok=True)
                    shutil.move(os.path.join(staging, name), destination)
                else:
                    self.log.warning("%s has no %s on the instance", layout.submission_folder(submission_id), name)
        result = parse_training_results(submission_id, predictions, log_dir, int(self.expected_folds))
        outcome = "success" if result["success"] else "failure"
        self.log.info("Training of %s: %s", layout.submission_folder(submission_id), outcome)
        return result


class FetchResultsOperator(FetchResultsMixin, InstanceMixin, BaseOperator):
    """
    Download ``training_output``, ``log`` and ``mprof.dat`` of a submission and parse them.

    See :class:`FetchResultsMixin` for the folders, and
    :class:`~ramp_airflow.utils.instance_mixin.InstanceMixin` for the instance and how to log in.

    :return: the dict of :func:`~ramp_airflow.utils.training_results.parse_training_results`
    """

    template_fields: Sequence[str] = (*INSTANCE_TEMPLATE_FIELDS, "expected_folds")
    ui_color = "#d5f5e3"

    def __init__(self, **kwargs) -> None:
        # Airflow's operator metaclass needs an __init__ of the operator's own to wrap.
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict:
        return self.fetch_results(self.instance_hook())


def _remove(path: str) -> None:
    """Remove a stale local copy (file or folder) of an output the instance no longer has."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
