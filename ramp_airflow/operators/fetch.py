"""Download a training's output and log from its instance and parse them into a result."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.hooks.instance_ssh import InstanceSSHHook
from ramp_airflow.operators.train import submission_id_of
from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc
from ramp_airflow.utils.training_results import parse_training_results

if TYPE_CHECKING:
    from airflow.sdk import Context


class FetchResultsOperator(BaseOperator):
    """
    Download ``training_output``, ``log`` and ``mprof.dat`` of a submission and parse them.

    Files the instance lacks are not downloaded (and stale local copies are removed), which
    makes the result a training failure naming the file rather than a failed task.

    :param submission_id: the submission's id
    :param address: the instance's IP address or host name
    :param host_key: the host key RsyncTrainOperator returned, ``"<type> <base64>"``
    :param remote_ramp_kit_folder: the kit folder on the instance
    :param local_predictions_folder: where ``training_output`` goes (``submission_<id>/`` inside)
    :param local_log_folder: where ``log`` and ``mprof.dat`` go (``submission_<id>/`` inside)
    :param expected_folds: the event's number of CV folds
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :return: the dict of :func:`~ramp_airflow.utils.training_results.parse_training_results`
    """

    template_fields: Sequence[str] = ("submission_id", "address", "host_key", "expected_folds")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        submission_id,
        address,
        host_key,
        remote_ramp_kit_folder,
        local_predictions_folder,
        local_log_folder,
        expected_folds,
        ami_user_name,
        key_path=None,
        ssh_conn_id=None,
        ssh_port=22,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.submission_id = submission_id
        self.address = address
        self.host_key = host_key
        self.remote_ramp_kit_folder = remote_ramp_kit_folder
        self.local_predictions_folder = local_predictions_folder
        self.local_log_folder = local_log_folder
        self.expected_folds = expected_folds
        self.ami_user_name = ami_user_name
        self.key_path = key_path
        self.ssh_conn_id = ssh_conn_id
        self.ssh_port = ssh_port

    def execute(self, context: Context) -> dict:
        submission_id = submission_id_of(self.submission_id)
        kit = self.remote_ramp_kit_folder
        if not self.host_key:
            raise ValueError("host_key is required: pass the host key RsyncTrainOperator returned")
        hook = InstanceSSHHook(
            self.address, self.ami_user_name, self.key_path, self.ssh_conn_id, self.ssh_port, self.host_key
        )
        remote_sub = layout.remote_submission_dir(kit, submission_id)
        predictions = layout.local_predictions_dir(self.local_predictions_folder, submission_id)
        log_dir = layout.local_log_dir(self.local_log_folder, submission_id)
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
                self.log.warning("%s has no %s on the instance", layout.submission_folder(submission_id), name)
                _remove(destination.rstrip("/"))
        result = parse_training_results(submission_id, predictions, log_dir, int(self.expected_folds))
        self.log.info(
            "Training of %s: %s", layout.submission_folder(submission_id), "success" if result["success"] else "failure"
        )
        return result


def _remove(path: str) -> None:
    """Remove a stale local copy (file or folder) of an output the instance no longer has."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
