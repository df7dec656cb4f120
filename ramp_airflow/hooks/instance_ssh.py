"""SSH and rsync to a training instance, with the instance's host key pinned.

Trust model (trust on first use, within one DAG run):

- The first contact of a run, :class:`~ramp_airflow.operators.train.RsyncTrainOperator`,
  connects with paramiko, reads the key the instance presents and returns it in its XCom
  (``"<type> <base64>"``). EC2 gives a fresh instance a fresh host key, so there is nothing
  to compare it with at that moment; the window is one connection right after launch.
- Every later contact of the run (the upload's rsync, the training wait's trigger, the
  fetch, a separate sensor) is given that key and accepts only it: paramiko with ``RejectPolicy``, asyncssh with the
  key as its only trusted host key, rsync's ssh with a temporary ``known_hosts`` holding
  only that key and ``StrictHostKeyChecking=yes``. A different key fails the task loudly.
- A caller who knows the key beforehand (e.g. read from the instance's console output)
  passes it as ``host_key`` to the first contact too, and then nothing is trusted blindly.
- Nothing is written to the Airflow user's own ``known_hosts``; EC2 reuses addresses.

Credentials: the key at ``key_path`` for user ``ami_user_name`` on ``ssh_port``, or an
Airflow SSH connection (``ssh_conn_id``) whose login, key (extra ``key_file`` or
``private_key``) and port are used, its host replaced by the instance's address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import paramiko
from airflow.providers.common.compat.sdk import AirflowException, BaseHook

from ramp_airflow.utils import remote_commands as rc


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect; the key material is kept out of ``repr``."""

    host: str
    port: int
    username: str
    key_path: str | None
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)


def ssh_target(address, ami_user_name, key_path=None, ssh_port=22, connection=None) -> SSHTarget:
    """
    Resolve the credentials of one instance.

    :param address: the instance's IP address or host name
    :param ami_user_name: the user to log in as (a connection's login wins)
    :param key_path: the private key file, when no connection is given
    :param ssh_port: the SSH port (a connection's port wins)
    :param connection: an Airflow SSH connection, or ``None``
    """
    rc.check_address(address)
    if connection is not None:
        extra = connection.extra_dejson
        target = SSHTarget(
            host=address,
            port=int(connection.port or ssh_port),
            username=connection.login or ami_user_name,
            key_path=extra.get("key_file"),
            private_key=extra.get("private_key"),
            passphrase=extra.get("private_key_passphrase"),
        )
        if not (target.key_path or target.private_key):
            raise AirflowException(
                f"SSH connection {connection.conn_id!r} has no key: set its extra 'key_file' or 'private_key'"
            )
    elif key_path:
        target = SSHTarget(host=address, port=int(ssh_port), username=ami_user_name, key_path=key_path)
    else:
        raise AirflowException("give key_path (aws.key_path) or ssh_conn_id (aws.ssh_conn_id) to reach instances")
    if not target.username:
        raise AirflowException("no user to log in as: give ami_user_name or a login in the SSH connection")
    return target


def host_key_string(key: paramiko.PKey) -> str:
    """``"<type> <base64>"``, the form host keys travel in (XCom, ``host_key`` params)."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_host_key(host_key: str) -> paramiko.PKey:
    """The public key of ``"<type> <base64>"``; ``AirflowException`` naming the value otherwise."""
    try:
        key_type, key_data = host_key.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data, validate=True))
    except Exception:
        raise AirflowException(
            f"host_key must be '<type> <base64>' as ssh-keyscan prints it, not {host_key!r}"
        ) from None


class _FirstUse(paramiko.MissingHostKeyPolicy):
    """Accept the unknown key of a first contact; the hook reads it from the transport."""

    def missing_host_key(self, client, hostname, key):
        pass


class InstanceSSHHook(BaseHook):
    """
    Run commands on, and rsync files to and from, one training instance.

    :param address: the instance's IP address or host name
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :param host_key: the pinned host key ``"<type> <base64>"``; ``None`` learns it on first
        contact (see the module docstring), after which :attr:`host_key` holds it
    :param connect_timeout: seconds to wait for a connection
    """

    def __init__(
        self, address, ami_user_name, key_path=None, ssh_conn_id=None, ssh_port=22, host_key=None, connect_timeout=30
    ):
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        connection = self.get_connection(ssh_conn_id) if ssh_conn_id else None
        self.target = ssh_target(address, ami_user_name, key_path, ssh_port, connection)
        self.host_key = " ".join(host_key.split()[:2]) if host_key else None
        if self.host_key:
            parse_host_key(self.host_key)
        self.connect_timeout = connect_timeout
        self._held: paramiko.SSHClient | None = None

    @contextlib.contextmanager
    def held_connection(self) -> Iterator[None]:
        """Run the commands of this block over one SSH connection, not one each (a login costs round trips)."""
        self._held = self.get_conn()
        try:
            yield
        finally:
            held, self._held = self._held, None
            held.close()

    def get_conn(self) -> paramiko.SSHClient:
        """A connected paramiko client that accepted only the pinned key (or learned it)."""
        t = self.target
        client = paramiko.SSHClient()
        if self.host_key:
            name = t.host if t.port == 22 else f"[{t.host}]:{t.port}"
            key = parse_host_key(self.host_key)
            client.get_host_keys().add(name, key.get_name(), key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(_FirstUse())
        pkey = None
        if t.private_key:
            pkey = paramiko.PKey.from_private_key(io.StringIO(t.private_key), password=t.passphrase)
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.username,
                key_filename=None if pkey else t.key_path,
                pkey=pkey,
                passphrase=t.passphrase,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise AirflowException(
                f"{t.host}:{t.port} presented a host key other than the one pinned at first contact; "
                "refusing to connect (a different machine answers at that address)"
            ) from None
        except paramiko.SSHException as err:
            client.close()
            if "not found in known_hosts" in str(err):
                raise AirflowException(
                    f"{t.host}:{t.port} presented a host key of another type than the pinned one"
                ) from None
            raise
        if not self.host_key:
            self.host_key = host_key_string(client.get_transport().get_remote_server_key())
            self.log.info("Learned the host key of %s:%s: %s", t.host, t.port, self.host_key)
        return client

    def run(self, command: str, timeout: float = 120) -> tuple[int, bytes, bytes]:
        """Run ``command`` (a quoted string from remote_commands); ``(exit status, stdout, stderr)``."""
        client = self._held or self.get_conn()
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out, err = stdout.read(), stderr.read()
            return stdout.channel.recv_exit_status(), out, err
        finally:
            if client is not self._held:
                client.close()

    def check_run(self, command: str, what: str, timeout: float = 120) -> str:
        """Run ``command`` and return its stdout; fail naming ``what`` if it exits non-zero."""
        status, out, err = self.run(command, timeout=timeout)
        if status != 0:
            detail = err.decode("utf-8", "replace").strip()[-2000:]
            raise AirflowException(f"{what} failed on {self.target.host} (exit {status}): {detail}")
        return out.decode("utf-8", "replace")

    def rsync(
        self,
        source: str | Sequence[str],
        destination: str,
        *,
        download: bool,
        attempts: int = 3,
        backoff_secs: float = 5.0,
    ) -> None:
        """
        rsync between local paths and paths on the instance (relative to the user's home).

        :param source: the local path (upload) or the remote path (download); or several,
            copied in one transfer into ``destination``
        :param destination: the remote path (upload) or the local path (download)
        :param download: whether the instance is the source
        :param attempts: tries in all when rsync exits with a transient code
        :param backoff_secs: wait before the next try, doubled each time
        """
        if not self.host_key:
            self.get_conn().close()  # learn the host key first: ssh below trusts nothing else
        t = self.target
        sources = [source] if isinstance(source, str) else list(source)
        if download:
            sources = [rc.remote_spec(t.username, t.host, path) for path in sources]
        else:
            destination = rc.remote_spec(t.username, t.host, destination)
        with tempfile.TemporaryDirectory(prefix="ramp-airflow-ssh-") as tmp:
            known_hosts = os.path.join(tmp, "known_hosts")
            with open(known_hosts, "w") as f:
                f.write(rc.known_hosts_line(t.host, t.port, self.host_key) + "\n")
            key_path = t.key_path
            if t.private_key:
                key_path = os.path.join(tmp, "key")
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(t.private_key.strip() + "\n")
            rsh = rc.ssh_argv(key_path, t.port, known_hosts, self.connect_timeout)
            argv = rc.rsync_argv(rsh, sources, destination)
            for attempt in range(1, attempts + 1):
                proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
                if proc.returncode == 0:
                    return
                detail = proc.stderr.strip()[-2000:]
                if proc.returncode not in rc.RSYNC_TRANSIENT_EXIT_CODES or attempt == attempts:
                    raise AirflowException(
                        f"rsync {' '.join(sources)} -> {destination} failed with exit code {proc.returncode} "
                        f"(attempt {attempt} of {attempts}): {detail}"
                    )
                self.log.warning(
                    "rsync exited %s (attempt %s of %s), retrying: %s", proc.returncode, attempt, attempts, detail
                )
                time.sleep(backoff_secs * 2 ** (attempt - 1))


class InstanceSSHHookAsync(BaseHook):
    """
    Run commands on one training instance from a trigger (asyncssh), accepting only ``host_key``.

    :param address: the instance's IP address or host name
    :param ami_user_name: the user to log in as
    :param key_path: the private key file (or give ``ssh_conn_id``)
    :param ssh_conn_id: an Airflow SSH connection whose login, key and port are used
    :param ssh_port: the SSH port
    :param host_key: the pinned host key ``"<type> <base64>"`` (required: triggers never learn keys)
    :param connect_timeout: seconds to wait for a connection
    """

    def __init__(
        self, address, ami_user_name, key_path=None, ssh_conn_id=None, ssh_port=22, host_key=None, connect_timeout=30
    ):
        super().__init__()
        if not host_key:
            raise AirflowException("host_key is required: pass the host key RsyncTrainOperator returned")
        parse_host_key(host_key)
        self.address, self.ami_user_name, self.key_path = address, ami_user_name, key_path
        self.ssh_conn_id, self.ssh_port, self.host_key = ssh_conn_id, ssh_port, host_key
        self.connect_timeout = connect_timeout

    async def run(self, command: str, timeout: float = 120) -> tuple[int, bytes]:
        """Run ``command`` over a new connection; ``(exit status, stdout)``."""
        import asyncssh

        connection = await self.aget_connection(self.ssh_conn_id) if self.ssh_conn_id else None
        t = ssh_target(self.address, self.ami_user_name, self.key_path, self.ssh_port, connection)
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
            result = await asyncio.wait_for(conn.run(command, encoding=None, check=False), timeout)
        return result.exit_status, result.stdout or b""
