"""Upload a submission to its training instance and start its training there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from ramp_airflow.hooks.instance_ssh import InstanceSSHHook
from ramp_airflow.utils import layout
from ramp_airflow.utils import remote_commands as rc

if TYPE_CHECKING:
    from airflow.sdk import Context


def submission_id_of(value: Any) -> int:
    """A (possibly templated, hence text) submission id as an int; ``ValueError`` otherwise."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    layout.submission_folder(value)  # validates
    return value


class RsyncTrainOperator(BaseOperator):
    """
    rsync a submission to the instance, then start its training there, detached.

    The first contact with the instance: it learns the host key (unless ``host_key`` pins it)
    and returns it for every later task. A retry while the training of the same submission
    still runs starts nothing and returns that training.

    :param submission_id: the submission's id (its folder name derives from it)
    :param address: the instance's IP address or host name
    :param ramp_submissions_path: the RAMP server's submissions folder (``events.path_ramp_submissions``)
    :param remote_ramp_kit_folder: the kit folder on the instance (``~/...`` is relative to the home)
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :param host_key: a known host key ``"<type> <base64>"`` to pin from the start
    :param training_command: the training command's argv; ``--submission <folder> --save-output``
        is appended
    :param memory_profiling: run the training under ``mprof run --include-children``
    :return: ``{"host_key": "<type> <base64>", "pid": int, "started_at": float}`` (remote unix time)
    """

    template_fields: Sequence[str] = ("submission_id", "address", "ramp_submissions_path", "host_key")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        submission_id,
        address,
        ramp_submissions_path,
        remote_ramp_kit_folder,
        ami_user_name,
        key_path=None,
        ssh_conn_id=None,
        ssh_port=22,
        host_key=None,
        training_command=("ramp-test",),
        memory_profiling=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.submission_id = submission_id
        self.address = address
        self.ramp_submissions_path = ramp_submissions_path
        self.remote_ramp_kit_folder = remote_ramp_kit_folder
        self.ami_user_name = ami_user_name
        self.key_path = key_path
        self.ssh_conn_id = ssh_conn_id
        self.ssh_port = ssh_port
        self.host_key = host_key
        self.training_command = tuple(training_command)
        self.memory_profiling = memory_profiling

    def execute(self, context: Context) -> dict:
        submission_id = submission_id_of(self.submission_id)
        source = layout.local_submission_dir(self.ramp_submissions_path, submission_id)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source} does not exist: check ramp_submissions_path and submission_id")
        kit = self.remote_ramp_kit_folder
        hook = InstanceSSHHook(
            self.address, self.ami_user_name, self.key_path, self.ssh_conn_id, self.ssh_port, self.host_key
        )
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
