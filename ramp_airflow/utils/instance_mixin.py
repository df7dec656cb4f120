"""The parameters every task that reaches a training instance over SSH takes, and its hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException

from ramp_airflow.utils import layout

if TYPE_CHECKING:
    from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

INSTANCE_TEMPLATE_FIELDS = ("submission_id", "address", "host_key")


def submission_id_of(value: Any) -> int:
    """A (possibly templated, hence text) submission id as an int; ``ValueError`` otherwise."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    layout.submission_folder(value)  # validates
    return value


class InstanceMixin:
    """
    A submission on its training instance, and how to log in there.

    :param submission_id: the submission's id (its folders derive from it) (templated)
    :param address: the instance's IP address or host name (templated)
    :param host_key: the instance's host key ``"<type> <base64>"``, as the first contact
        returned it; every later contact accepts only that key (templated)
    :param remote_ramp_kit_folder: the kit folder on the instance (``~/...`` is relative to the home)
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used, its host
        replaced by ``address``
    :param ssh_port: the SSH port
    """

    def __init__(
        self,
        *,
        submission_id: Any,
        address: Any,
        remote_ramp_kit_folder: str,
        ami_user_name: str,
        host_key: Any = None,
        key_path: str | None = None,
        ssh_conn_id: str | None = None,
        ssh_port: int = 22,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.submission_id = submission_id
        self.address = address
        self.host_key = host_key
        self.remote_ramp_kit_folder = remote_ramp_kit_folder
        self.ami_user_name = ami_user_name
        self.key_path = key_path
        self.ssh_conn_id = ssh_conn_id
        self.ssh_port = ssh_port

    @property
    def submission(self) -> int:
        """The rendered submission id, validated."""
        return submission_id_of(self.submission_id)

    @property
    def ssh_arguments(self) -> dict[str, Any]:
        """What a trigger needs to log in as this task does."""
        return {
            "address": self.address,
            "host_key": self.host_key,
            "remote_ramp_kit_folder": self.remote_ramp_kit_folder,
            "ami_user_name": self.ami_user_name,
            "key_path": self.key_path,
            "ssh_conn_id": self.ssh_conn_id,
            "ssh_port": self.ssh_port,
        }

    def instance_hook(self, *, pinned: bool = True) -> InstanceSSHHook:
        """The SSH hook; ``pinned`` requires the host key learned at first contact."""
        # Imported here: DAG files import the operators at every parse, and paramiko is slow to load.
        from ramp_airflow.hooks.instance_ssh import InstanceSSHHook

        if pinned and not self.host_key:
            raise AirflowException("host_key is required: pass the host key RsyncTrainOperator returned")
        return InstanceSSHHook(
            self.address, self.ami_user_name, self.key_path, self.ssh_conn_id, self.ssh_port, self.host_key
        )
