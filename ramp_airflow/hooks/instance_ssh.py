"""SSH and rsync to a training instance, with the instance's host key pinned.

How the host key is trusted, and the credentials used: see :mod:`ramp_airflow.utils.instance_login`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import paramiko
from airflow.providers.common.compat.sdk import AirflowException, BaseHook

from ramp_airflow.utils import ssh_commands
from ramp_airflow.utils.instance_login import InstanceLogin, host_key_string, parse_host_key, ssh_target


class _FirstUse(paramiko.MissingHostKeyPolicy):
    """Accept the unknown key of a first contact; the hook reads it from the transport."""

    def missing_host_key(self, client, hostname, key):
        pass


class InstanceSSHHook(BaseHook):
    """
    Run commands on, and rsync files to and from, one training instance.

    :param address: the instance's IP address or host name
    :param login: how to log in
    :param host_key: the pinned host key ``"<type> <base64>"``; ``None`` learns it on first
        contact, after which :attr:`host_key` holds it
    :param connect_timeout: seconds to wait for a connection
    """

    def __init__(self, address: str, login: InstanceLogin, host_key: str | None = None, connect_timeout: int = 30):
        super().__init__()
        connection = self.get_connection(login.ssh_conn_id) if login.ssh_conn_id else None
        self.target = ssh_target(address, login, connection)
        self.host_key = host_key_string(parse_host_key(host_key)) if host_key else None
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
        """Run ``command`` (a quoted string from utils.training_job); ``(exit status, stdout, stderr)``."""
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
            sources = [ssh_commands.remote_spec(t.username, t.host, path) for path in sources]
        else:
            destination = ssh_commands.remote_spec(t.username, t.host, destination)
        with tempfile.TemporaryDirectory(prefix="ramp-airflow-ssh-") as tmp:
            known_hosts = os.path.join(tmp, "known_hosts")
            with open(known_hosts, "w") as f:
                f.write(ssh_commands.known_hosts_line(t.host, t.port, self.host_key) + "\n")
            key_path = t.key_path
            if t.private_key:
                key_path = os.path.join(tmp, "key")
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(t.private_key.strip() + "\n")
            rsh = ssh_commands.ssh_argv(key_path, t.port, known_hosts, self.connect_timeout)
            argv = ssh_commands.rsync_argv(rsh, sources, destination)
            for attempt in range(1, attempts + 1):
                proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
                if proc.returncode == 0:
                    return
                detail = proc.stderr.strip()[-2000:]
                if proc.returncode not in ssh_commands.RSYNC_TRANSIENT_EXIT_CODES or attempt == attempts:
                    raise AirflowException(
                        f"rsync {' '.join(sources)} -> {destination} failed with exit code {proc.returncode} "
                        f"(attempt {attempt} of {attempts}): {detail}"
                    )
                self.log.warning(
                    "rsync exited %s (attempt %s of %s), retrying: %s", proc.returncode, attempt, attempts, detail
                )
                time.sleep(backoff_secs * 2 ** (attempt - 1))
