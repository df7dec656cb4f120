"""Wait for a submission's training to end on its instance."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import paramiko
from airflow.providers.common.compat.sdk import AirflowException, BaseSensorOperator, PokeReturnValue

from ramp_airflow.hooks.ec2 import RampEc2Hook
from ramp_airflow.hooks.instance_ssh import InstanceSSHHook
from ramp_airflow.operators.train import submission_id_of
from ramp_airflow.triggers.training import TrainingFinishedTrigger
from ramp_airflow.utils.ec2_lifecycle import GONE
from ramp_airflow.utils.remote_commands import TrainingWatch

if TYPE_CHECKING:
    from airflow.sdk import Context

OUTCOMES = frozenset({"finished", "died", "timeout", "lost"})


class TrainingFinishedSensor(BaseSensorOperator):
    """
    Wait until the training started by RsyncTrainOperator ends, copying its log as it grows.

    The outcome is returned (XCom), never raised, so that the DAG decides what follows:
    ``{"outcome": "finished", "exit_code": int}``, ``{"outcome": "died"}`` (no exit code and
    no live process), ``{"outcome": "timeout", "after_secs": float}`` (the process group was
    killed) or ``{"outcome": "lost"}`` (SSH failed and EC2 no longer reports the instance
    running). A dropped SSH connection is retried at the next poll.

    :param submission_id: the submission's id
    :param address: the instance's IP address or host name
    :param host_key: the host key RsyncTrainOperator returned, ``"<type> <base64>"``
    :param remote_ramp_kit_folder: the kit folder on the instance
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :param poke_interval: seconds between polls (``check_finished_training_interval_secs``)
    :param training_timeout_secs: kill the training once it ran this long (``None``: no limit)
    :param instance_id: the EC2 instance, to tell a lost instance from a dropped connection
    :param aws_params: the AWS credentials for that check (``aws_conn_id``, ``region_name``,
        ``profile_name``, ``access_key_id``, ``secret_access_key``), as the EC2 tasks take them
    :param deferrable: wait in the triggerer rather than in a worker slot
    """

    template_fields: Sequence[str] = ("submission_id", "address", "host_key", "instance_id")

    def __init__(
        self,
        *,
        submission_id,
        address,
        host_key,
        remote_ramp_kit_folder,
        ami_user_name,
        key_path=None,
        ssh_conn_id=None,
        ssh_port=22,
        poke_interval=60.0,
        training_timeout_secs=None,
        instance_id=None,
        aws_params=None,
        deferrable=True,
        **kwargs,
    ):
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.submission_id = submission_id
        self.address = address
        self.host_key = host_key
        self.remote_ramp_kit_folder = remote_ramp_kit_folder
        self.ami_user_name = ami_user_name
        self.key_path = key_path
        self.ssh_conn_id = ssh_conn_id
        self.ssh_port = ssh_port
        self.training_timeout_secs = training_timeout_secs
        self.instance_id = instance_id
        self.aws_params = dict(aws_params or {})
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> InstanceSSHHook:
        if not self.host_key:
            raise AirflowException("host_key is required: pass the host key RsyncTrainOperator returned")
        return InstanceSSHHook(
            self.address, self.ami_user_name, self.key_path, self.ssh_conn_id, self.ssh_port, self.host_key
        )

    @cached_property
    def watch(self) -> TrainingWatch:
        return TrainingWatch(
            self.remote_ramp_kit_folder, submission_id_of(self.submission_id), self.training_timeout_secs
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context=context)
        self.defer(
            trigger=TrainingFinishedTrigger(
                submission_id=submission_id_of(self.submission_id),
                address=self.address,
                host_key=self.host_key,
                remote_ramp_kit_folder=self.remote_ramp_kit_folder,
                ami_user_name=self.ami_user_name,
                key_path=self.key_path,
                ssh_conn_id=self.ssh_conn_id,
                ssh_port=self.ssh_port,
                poll_interval=float(self.poke_interval),
                training_timeout_secs=self.training_timeout_secs,
                instance_id=self.instance_id,
                aws_params=self.aws_params,
            ),
            method_name="execute_complete",
        )

    def _instance_gone(self) -> bool:
        if not self.instance_id:
            return False
        readiness, description = RampEc2Hook(**self.aws_params).get_readiness(self.instance_id)
        self.log.info("EC2 reports instance %s: %s", self.instance_id, description)
        return readiness == GONE

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            _, output, _ = self.hook.run(self.watch.poll_command())
        except (OSError, EOFError, paramiko.SSHException) as err:
            if isinstance(err, paramiko.AuthenticationException):
                raise
            self.log.warning(
                "SSH to %s failed (%s: %s); retrying at the next poll", self.address, type(err).__name__, err
            )
            gone = self._instance_gone()
            return PokeReturnValue(is_done=gone, xcom_value={"outcome": "lost"} if gone else None)
        lines, outcome = self.watch.take(output)
        for line in lines:
            self.log.info("%s", line)
        if outcome and outcome["outcome"] == "timeout":
            said = self.hook.check_run(self.watch.kill_command(), "killing the timed-out training").strip()
            self.log.warning("Training timed out after %.0f s; its process group is %s", outcome["after_secs"], said)
        return PokeReturnValue(is_done=outcome is not None, xcom_value=outcome)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else None
            raise AirflowException(f"Watching the training failed: {message or event!r}")
        result = event.get("result")
        if not isinstance(result, dict) or result.get("outcome") not in OUTCOMES:
            raise AirflowException(f"The training trigger sent an event without a known outcome: {event!r}")
        return result
