"""How to log in to a training instance, and the credentials that resolves to: the one place they are written.

Trust model of the host keys (trust on first use, within one DAG run):

- The first contact of a run, the upload (:class:`~ramp_airflow.operators.training.RsyncTrainOperator`),
  connects with paramiko, reads the key the instance presents and returns it in its XCom
  (``"<type> <base64>"``). EC2 gives a fresh instance a fresh host key, so there is nothing
  to compare it with at that moment; the window is one connection right after launch.
- Every later contact of the run (the upload's rsync, the training wait, the fetch) is given
  that key and accepts only it: paramiko with ``RejectPolicy``, asyncssh with the key as its only
  trusted host key, rsync's ssh with a temporary ``known_hosts`` holding only that key and
  ``StrictHostKeyChecking=yes``. A different key fails the task loudly.
- A caller who knows the key beforehand (e.g. read from the instance's console output)
  passes it as ``host_key`` to the first contact too, and then nothing is trusted blindly.
- Nothing is written to the Airflow user's own ``known_hosts``; EC2 reuses addresses.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException

from ramp_airflow.utils.ssh_commands import check_address


@dataclass(frozen=True)
class InstanceLogin:
    """
    How the backend logs in to an event's instances: the key at ``key_path`` for user
    ``ami_user_name`` on ``ssh_port``, or an Airflow SSH connection (``ssh_conn_id``) whose login,
    key (extra ``key_file`` or ``private_key``) and port are used, its host replaced by the
    instance's address. It holds no secret: a trigger may carry it (:meth:`to_dict`).

    :param ami_user_name: the user to log in as (``aws.ami_user_name``)
    :param key_path: the private key file (``aws.key_path``)
    :param ssh_conn_id: an Airflow SSH connection (``aws.ssh_conn_id``)
    :param ssh_port: the SSH port (``aws.ssh_port``)
    :param remote_ramp_kit_folder: the kit folder on the instance (``aws.remote_ramp_kit_folder``;
        ``~/...`` is relative to the home)
    """

    ami_user_name: str
    key_path: str | None = None
    ssh_conn_id: str | None = None
    ssh_port: int = 22
    remote_ramp_kit_folder: str = "."

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect, resolved; the key material is kept out of ``repr``."""

    host: str
    port: int
    username: str
    key_path: str | None
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)


def ssh_target(address: str, login: InstanceLogin, connection=None) -> SSHTarget:
    """
    Resolve the credentials of one instance.

    :param address: the instance's IP address or host name
    :param login: how to log in; a connection's login and port win over its user and port
    :param connection: the Airflow SSH connection ``login.ssh_conn_id`` names, or ``None``
    """
    check_address(address)
    if connection is not None:
        extra = connection.extra_dejson
        target = SSHTarget(
            host=address,
            port=int(connection.port or login.ssh_port),
            username=connection.login or login.ami_user_name,
            key_path=extra.get("key_file"),
            private_key=extra.get("private_key"),
            passphrase=extra.get("private_key_passphrase"),
        )
        if not (target.key_path or target.private_key):
            raise AirflowException(
                f"SSH connection {connection.conn_id!r} has no key: set its extra 'key_file' or 'private_key'"
            )
    elif login.key_path:
        target = SSHTarget(
            host=address, port=int(login.ssh_port), username=login.ami_user_name, key_path=login.key_path
        )
    else:
        raise AirflowException("give key_path (aws.key_path) or ssh_conn_id (aws.ssh_conn_id) to reach instances")
    if not target.username:
        raise AirflowException("no user to log in as: give ami_user_name or a login in the SSH connection")
    return target


def private_key_from_text(text: str, passphrase: str | None = None):
    """
    The paramiko key of a private key's text (an SSH connection's ``private_key`` extra), of any
    type paramiko reads; ``AirflowException`` naming the extra otherwise, never the key.
    """
    import io

    import paramiko  # slow to load: not at parse time

    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise AirflowException("the SSH connection's private_key needs its private_key_passphrase") from None
        except paramiko.SSHException:
            continue
    raise AirflowException(
        "the SSH connection's private_key is not an Ed25519, ECDSA or RSA private key paramiko reads"
    )


def host_key_string(key) -> str:
    """``"<type> <base64>"`` of a paramiko key, the form host keys travel in (XCom, ``host_key`` params)."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_host_key(host_key: str):
    """The paramiko public key of ``"<type> <base64>"``; ``AirflowException`` naming the value otherwise."""
    import paramiko  # slow to load: not at parse time

    try:
        key_type, key_data = host_key.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data, validate=True))
    except Exception:
        raise AirflowException(
            f"host_key must be '<type> <base64>' as ssh-keyscan prints it, not {host_key!r}"
        ) from None
