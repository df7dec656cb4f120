"""The tasks that reach a submission on its training instance: upload it and start its training; fetch its results.

Between the two, :class:`~ramp_airflow.sensors.instance.TrainingFinishedSensor` waits for the
training's end. How logging in and the host key work: :mod:`ramp_airflow.utils.instance_login`.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException, BaseOperator

from ramp_airflow.utils import ec2_lifecycle, layout, training_job
from ramp_airflow.utils import training_states as ts
from ramp_airflow.utils.aws_credentials import DEFAULT_CREDENTIALS, AwsCredentials
from ramp_airflow.utils.layout import RemoteSubmissionPaths
from ramp_airflow.utils.run_values import given, submission_id_of
from ramp_airflow.utils.training_reports import parse_start_output
from ramp_airflow.utils.training_results import failed_result, parse_training_results

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook
    from ramp_airflow.utils.instance_login import InstanceLogin


class _InstanceOperator(BaseOperator):
    """
    Base of the tasks that reach one submission on its training instance over SSH.

    :param submission_id: the submission (templated); its folders derive from it
    :param address: the instance's IP address or host name (templated)
    :param login: how to log in, and where the kit folder is
    :param host_key: the instance's host key ``"<type> <base64>"`` (templated); only that key is
        accepted
    """

    template_fields: Sequence[str] = ("submission_id", "address", "host_key")

    def __init__(self, *, submission_id: Any, address: Any, login: InstanceLogin, host_key: Any = None, **kwargs):
        super().__init__(**kwargs)
        self.submission_id = submission_id
        self.address = address
        self.login = login
        self.host_key = host_key

    @property
    def paths(self) -> RemoteSubmissionPaths:
        """The submission's paths on the instance, from its rendered id (validated)."""
        return RemoteSubmissionPaths(self.login.remote_ramp_kit_folder, submission_id_of(self.submission_id))

    def instance_hook(self) -> InstanceSSHHook:
        # Imported here: DAG files import the operators at every parse, and paramiko is slow to load.
        from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

        return InstanceSSHHook(self.address, self.login, given(self.host_key))


class RsyncTrainOperator(_InstanceOperator):
    """
    rsync a submission to the instance and start its training there, detached.

    The first contact with the instance: it learns the host key (unless ``host_key`` pins it).
    A retry while the training of the same submission still runs starts nothing and takes that
    training; a retry of this task in the same run after its training ended does not train
    again. A retry first asks EC2 whether the instance is still there: it learns the host key
    anew, so it must not reach whoever holds a lost instance's address.

    :param ramp_submissions_path: the RAMP server's submissions folder (``events.path_ramp_submissions``)
        (templated)
    :param training_command: the training command's argv; ``--submission <folder> --save-output``
        is appended
    :param memory_profiling: run the training under ``mprof run --include-children``
    :param instance_id: the EC2 instance (templated), asked about before a retry
    :param aws_credentials: how to ask EC2
    :param skip_when_lost: skip when a retry finds the instance gone, so that a next attempt
        (``trigger_rule="all_skipped"``) can follow; otherwise fail
    :param max_upload_secs: stop an upload that takes longer (the instance's side may receive slowly)
    :return: ``{"host_key": "<type> <base64>", "pid": int, "started_at": float, "training_started_at": float}``:
        the job's own record of its start (the instance's clock, the participant's to forge) and when
        this task started the training, after the upload (this side's clock, from which the
        training's time limit counts)
    """

    template_fields: Sequence[str] = (*_InstanceOperator.template_fields, "ramp_submissions_path", "instance_id")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        ramp_submissions_path: str,
        training_command: Sequence[str] = ("ramp-test",),
        memory_profiling: bool = False,
        instance_id: str | None = None,
        aws_credentials: AwsCredentials = DEFAULT_CREDENTIALS,
        skip_when_lost: bool = False,
        max_upload_secs: float = 1800,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ramp_submissions_path = ramp_submissions_path
        self.max_upload_secs = max_upload_secs
        self.training_command = tuple(training_command)
        self.memory_profiling = memory_profiling
        self.instance_id = instance_id
        self.aws_credentials = aws_credentials
        self.skip_when_lost = skip_when_lost

    def execute(self, context: Context) -> dict:
        ti = context.get("ti")
        if ti is not None and ti.try_number > 1 and self._instance_gone():
            message = f"instance {self.instance_id} was lost before its training started"
            raise AirflowSkipException(message) if self.skip_when_lost else AirflowException(message)
        paths = self.paths
        source = layout.local_submission_dir(self.ramp_submissions_path, paths.submission_id)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source} does not exist: check ramp_submissions_path and submission_id")
        argv = training_job.training_argv(paths.submission_id, self.training_command, self.memory_profiling)
        hook = self.instance_hook()
        with hook.held_connection():
            hook.check_run(training_job.prepare_upload_command(paths), "creating the submission folder")
            hook.rsync(source + "/", paths.submission + "/", download=False, max_secs=self.max_upload_secs)
            # The time limit counts from here, by this side's clock: the upload has its own bound.
            training_started_at = time.time()
            started = hook.check_run(training_job.start_command(paths, argv, _run_key(ti)), "starting the training")
        state, pid, started_at = parse_start_output(started)
        folder = layout.submission_folder(paths.submission_id)
        if state == ts.STARTED:
            self.log.info("Training of %s started on %s: pid %s", folder, self.address, pid)
        elif state == ts.RUNNING:
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
        return {
            "host_key": hook.host_key,
            "pid": pid,
            "started_at": started_at,
            "training_started_at": training_started_at,
        }

    def _instance_gone(self) -> bool:
        if not given(self.instance_id):
            return False
        from ramp_airflow.hooks.ec2 import RampEc2Hook  # slow to load: not at parse time

        readiness, description = RampEc2Hook(**self.aws_credentials.hook_kwargs()).get_readiness(self.instance_id)
        self.log.info("EC2 reports instance %s: %s", self.instance_id, description)
        return readiness == ec2_lifecycle.GONE


def _run_key(ti) -> str | None:
    """Who starts the training: this task of this run, whatever its try (None outside a run)."""
    if ti is None:
        return None
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"


class FetchResultsOperator(_InstanceOperator):
    """
    Download ``training_output``, ``log`` and ``mprof.dat`` of a submission and parse them.

    One transfer brings all three into a folder beside the log, from which each replaces its
    local copy. Files the instance lacks are not downloaded (and stale local copies are
    removed), which makes the result a training failure naming the file rather than a failed
    task. After a training whose instance was lost there is nothing to fetch: the task skips.

    :param local_predictions_folder: where ``training_output`` goes (``submission_<id>/`` inside)
    :param local_log_folder: where ``log`` and ``mprof.dat`` go (``submission_<id>/`` inside)
    :param expected_folds: the event's number of CV folds (templated)
    :param max_output_bytes: the most the three may take together on disk (``aws.max_output_mb``);
        a larger download is stopped, removed, and the result is a training error saying so
    :param max_download_secs: how long the download may take; a slower one (the instance sends what
        it likes, as slowly as it likes) is stopped, removed, and a training error likewise
    :param training_outcome: the training wait's outcome (templated); ``None`` fetches regardless
    :return: the dict of :func:`~ramp_airflow.utils.training_results.parse_training_results`
    """

    template_fields: Sequence[str] = (*_InstanceOperator.template_fields, "expected_folds", "training_outcome")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        local_predictions_folder: str,
        local_log_folder: str,
        expected_folds: Any,
        max_output_bytes: int = 1 << 30,
        max_download_secs: float = 1800,
        training_outcome: Any = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.local_predictions_folder = local_predictions_folder
        self.local_log_folder = local_log_folder
        self.expected_folds = expected_folds
        self.max_output_bytes = max_output_bytes
        self.max_download_secs = max_download_secs
        self.training_outcome = training_outcome

    def execute(self, context: Context) -> dict:
        if isinstance(self.training_outcome, dict) and self.training_outcome.get("outcome") == ts.LOST:
            raise AirflowSkipException("the instance was lost during training: there is nothing to fetch")
        if not given(self.host_key):
            raise AirflowException("host_key is required: pass the host key the upload task returned")
        paths = self.paths
        submission_id = paths.submission_id
        predictions = layout.local_predictions_dir(self.local_predictions_folder, submission_id)
        log_dir = layout.local_log_dir(self.local_log_folder, submission_id)
        # Where each output's local copy goes: replaced by a download, removed when none is kept.
        local_copies = {
            name: predictions if name == layout.TRAINING_OUTPUT else os.path.join(log_dir, name)
            for name in layout.OUTPUTS
        }
        from ramp_airflow.hooks.instance_ssh import DownloadTooLarge, TransferTooSlow  # slow: not at parse time

        hook = self.instance_hook()
        listed = hook.check_run(training_job.existing_outputs_command(paths), "listing the training output").split()
        existing = [name for name in layout.OUTPUTS if name in listed]
        os.makedirs(log_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=log_dir) as staging:
            if existing:
                remote = [posixpath.join(paths.submission, name) for name in existing]
                try:
                    hook.rsync(
                        remote,
                        staging + "/",
                        download=True,
                        max_bytes=self.max_output_bytes,
                        max_secs=self.max_download_secs,
                    )
                except (DownloadTooLarge, TransferTooSlow) as err:
                    limit = (
                        f"take more than {self.max_output_bytes >> 20} MiB, the event's limit (max_output_mb)"
                        if isinstance(err, DownloadTooLarge)
                        else f"did not download within {self.max_download_secs:.0f} s"
                    )
                    message = f"The training's output, log and memory profile {limit}: they were not kept ({err})."
                    self.log.warning("%s", message)
                    for destination in local_copies.values():
                        _remove(destination)
                    return failed_result(submission_id, message)
            for name, destination in local_copies.items():
                _remove(destination)
                # rsync skips what is not a regular file or folder (a link, a pipe): it is missing here.
                if os.path.exists(os.path.join(staging, name)):
                    os.makedirs(os.path.dirname(destination), exist_ok=True)
                    shutil.move(os.path.join(staging, name), destination)
                else:
                    self.log.warning(
                        "%s has no %s on the instance, or not as a regular file or folder",
                        layout.submission_folder(submission_id),
                        name,
                    )
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
