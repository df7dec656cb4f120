"""InstanceSSHHook against the bench's sshd: how many connections its commands take."""

from __future__ import annotations

from ramp_airflow.hooks.instance_ssh import InstanceSSHHook
from ramp_airflow.utils.instance_login import InstanceLogin


def client_port(hook: InstanceSSHHook) -> str:
    """The local port of the SSH connection a command ran over, as the server saw it."""
    return hook.check_run('echo "$SSH_CLIENT"', "reading SSH_CLIENT").split()[1]


def test_a_held_connection_carries_every_command_of_its_block(instance):
    hook = InstanceSSHHook(
        instance.host, InstanceLogin(ami_user_name=instance.user, key_path=instance.key_path, ssh_port=instance.port)
    )
    apart = {client_port(hook), client_port(hook)}
    with hook.held_connection():
        held = {client_port(hook), client_port(hook), client_port(hook)}
    after = client_port(hook)
    assert len(apart) == 2, "without a held connection each command logs in anew"
    assert len(held) == 1, "inside the block the commands share one connection"
    assert after not in held, "the held connection is closed with its block"
