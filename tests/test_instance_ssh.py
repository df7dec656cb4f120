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


def test_the_key_can_come_from_an_ssh_connection(instance, tmp_path, monkeypatch):
    """The README's way: an Airflow SSH connection holding the private key itself (no key file)."""
    import asyncio
    import json

    from ramp_airflow.hooks.instance_ssh_async import InstanceSSHHookAsync

    with open(instance.key_path) as f:
        connection = {"conn_type": "ssh", "login": instance.user, "extra": {"private_key": f.read()}}
    monkeypatch.setenv("AIRFLOW_CONN_RAMP_INSTANCES", json.dumps(connection))
    login = InstanceLogin(ami_user_name="nobody", ssh_conn_id="ramp_instances", ssh_port=instance.port)
    hook = InstanceSSHHook(instance.host, login)
    assert hook.check_run("whoami", "asking who logs in").strip() == instance.user
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "file").write_text("uploaded")
    remote = f"ramp-conn-test-{tmp_path.name}"
    hook.rsync(str(tmp_path / "up") + "/", remote + "/", download=False)
    hook.rsync(remote + "/file", str(tmp_path / "down"), download=True)
    assert (tmp_path / "down").read_text() == "uploaded"
    hook.check_run(f"rm -rf -- {remote}", "cleaning up")
    status, out = asyncio.run(InstanceSSHHookAsync(instance.host, login, hook.host_key).run("whoami"))
    assert (status, out.decode().strip()) == (0, instance.user)


def test_what_a_remote_command_prints_and_how_long_it_takes_are_bounded(instance):
    """What the instance prints, and when it ends, are the participant's to choose."""
    import asyncio

    import pytest

    from ramp_airflow.hooks.instance_ssh_async import InstanceSSHHookAsync
    from ramp_airflow.utils.ssh_commands import RemoteOutputTooLarge

    login = InstanceLogin(ami_user_name=instance.user, key_path=instance.key_path, ssh_port=instance.port)
    hook = InstanceSSHHook(instance.host, login)
    endless = "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    with pytest.raises(RemoteOutputTooLarge):
        hook.run(endless)
    with pytest.raises(TimeoutError):
        hook.run("sleep 30", timeout=1)
    assert hook.run("echo out; echo err >&2; exit 3") == (3, b"out\n", b"err\n")
    on_triggerer = InstanceSSHHookAsync(instance.host, login, hook.host_key)
    with pytest.raises(RemoteOutputTooLarge):
        asyncio.run(on_triggerer.run(endless))
    with pytest.raises(TimeoutError):
        asyncio.run(on_triggerer.run("sleep 30", timeout=1))
    assert asyncio.run(on_triggerer.run("echo out; echo err >&2; exit 3")) == (3, b"out\n")
