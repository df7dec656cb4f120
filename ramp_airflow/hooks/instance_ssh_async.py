"""Commands on a training instance from a trigger (asyncssh), accepting only its pinned host key."""

from __future__ import annotations

import asyncio

from airflow.providers.common.compat.sdk import AirflowException, BaseHook

from ramp_airflow.utils.instance_login import InstanceLogin, host_key_string, parse_host_key, ssh_target
from ramp_airflow.utils.ssh_commands import MAX_OUTPUT_BYTES, RemoteOutputTooLarge


class InstanceSSHHookAsync(BaseHook):
    """
    Run commands on one training instance from a trigger (asyncssh), accepting only ``host_key``.

    :param address: the instance's IP address or host name
    :param login: how to log in
    :param host_key: the pinned host key ``"<type> <base64>"`` (required: triggers never learn keys)
    :param connect_timeout: seconds to wait for a connection
    """

    def __init__(self, address: str, login: InstanceLogin, host_key: str, connect_timeout: int = 30):
        super().__init__()
        if not host_key:
            raise AirflowException("host_key is required: pass the host key the upload task returned")
        self.address, self.login = address, login
        self.host_key = host_key_string(parse_host_key(host_key))
        self.connect_timeout = connect_timeout

    async def run(self, command: str, timeout: float = 120) -> tuple[int, bytes]:
        """
        Run ``command`` over a new connection; ``(exit status, stdout)``. Bounded whatever the instance
        does: ``TimeoutError`` after ``timeout`` seconds in all, :class:`~ramp_airflow.utils.ssh_commands.RemoteOutputTooLarge`
        past that much stdout; stderr is not read.
        """
        import asyncssh

        connection = await self.aget_connection(self.login.ssh_conn_id) if self.login.ssh_conn_id else None
        t = ssh_target(self.address, self.login, connection)
        if t.private_key:
            client_key = asyncssh.import_private_key(t.private_key, t.passphrase)
        else:
            client_key = asyncssh.read_private_key(t.key_path, t.passphrase)
        trusted = ([asyncssh.import_public_key(self.host_key)], [], [])
        async with asyncssh.connect(
            t.host,
            t.port,
            username=t.username,
            client_keys=[client_key],
            known_hosts=trusted,
            config=None,
            agent_path=None,
            connect_timeout=self.connect_timeout,
            keepalive_interval=15,
        ) as conn:
            return await asyncio.wait_for(_run_bounded(conn, command), timeout)


async def _run_bounded(conn, command: str) -> tuple[int, bytes]:
    import asyncssh

    async with conn.create_process(command, encoding=None, stderr=asyncssh.DEVNULL) as process:
        out = bytearray()
        while chunk := await process.stdout.read(1 << 16):
            out += chunk
            if len(out) > MAX_OUTPUT_BYTES:
                raise RemoteOutputTooLarge(f"the remote command printed over {len(out)} bytes")
        completed = await process.wait(check=False)
    return completed.exit_status if completed.exit_status is not None else -1, bytes(out)
