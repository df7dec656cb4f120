"""SSH and rsync to a training instance, with the instance's host key pinned.

How the host key is trusted, and the credentials used: see :mod:`ramp_airflow.utils.instance_login`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import paramiko
from airflow.providers.common.compat.sdk import AirflowException, BaseHook

from ramp_airflow.utils import ssh_commands
from ramp_airflow.utils.instance_login import (
    InstanceLogin,
    host_key_string,
    parse_host_key,
    private_key_from_text,
    ssh_target,
)


class DownloadTooLarge(AirflowException):
    """A download from an instance grew past its limit; it was stopped and what came is left to remove."""


class TransferTooSlow(AirflowException):
    """A transfer to or from an instance did not end in its time; it was stopped."""


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
            pkey = private_key_from_text(t.private_key, t.passphrase)
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
        """
        Run ``command`` (a quoted string from utils.training_job); ``(exit status, stdout, stderr)``.

        Bounded whatever the instance does: ``TimeoutError`` after ``timeout`` seconds in all,
        :class:`~ramp_airflow.utils.ssh_commands.RemoteOutputTooLarge` past that much stdout;
        stderr past it is dropped.
        """
        client = self._held or self.get_conn()
        try:
            _, stdout, _ = client.exec_command(command, timeout=timeout)
            return _read_bounded(stdout.channel, time.monotonic() + timeout)
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
        max_bytes: int | None = None,
        max_secs: float | None = None,
        attempts: int = 3,
        backoff_secs: float = 5.0,
    ) -> None:
        """
        rsync between local paths and paths on the instance (relative to the user's home).

        :param source: the local path (upload) or the remote path (download); or several,
            copied in one transfer into ``destination``
        :param destination: the remote path (upload) or the local path (download)
        :param download: whether the instance is the source
        :param max_bytes: with ``download``, stop the transfer and raise :class:`DownloadTooLarge` once
            ``destination`` holds more than this, on disk: the instance decides what it sends
        :param max_secs: stop a transfer and raise :class:`TransferTooSlow` after this long (rsync's own
            ``--timeout`` only catches a silent peer, not a trickle)
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
            argv = ssh_commands.rsync_argv(rsh, sources, destination, download)
            for attempt in range(1, attempts + 1):
                returncode, detail = _run_watched(argv, destination if download else None, max_bytes, max_secs)
                if returncode == 0:
                    return
                if returncode not in ssh_commands.RSYNC_TRANSIENT_EXIT_CODES or attempt == attempts:
                    raise AirflowException(
                        f"rsync {' '.join(sources)} -> {destination} failed with exit code {returncode} "
                        f"(attempt {attempt} of {attempts}): {detail}"
                    )
                self.log.warning(
                    "rsync exited %s (attempt %s of %s), retrying: %s", returncode, attempt, attempts, detail
                )
                time.sleep(backoff_secs * 2 ** (attempt - 1))


def _read_bounded(channel: paramiko.Channel, deadline: float) -> tuple[int, bytes, bytes]:
    """Read a command's stdout and stderr until it exits, or the deadline or the size limit is passed."""
    out, err = bytearray(), bytearray()
    while (
        not (channel.exit_status_ready() and channel.eof_received)
        or channel.recv_ready()
        or channel.recv_stderr_ready()
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the remote command did not end in time")
        if channel.closed and not (channel.recv_ready() or channel.recv_stderr_ready()):
            break  # dropped: no exit status will come
        busy = False
        if channel.recv_ready():
            out += channel.recv(1 << 16)
            if len(out) > ssh_commands.MAX_OUTPUT_BYTES:
                raise ssh_commands.RemoteOutputTooLarge(f"the remote command printed over {len(out)} bytes")
            busy = True
        if channel.recv_stderr_ready():
            chunk = channel.recv_stderr(1 << 16)
            err += chunk[: max(0, ssh_commands.MAX_OUTPUT_BYTES - len(err))]
            busy = True
        if not busy:
            time.sleep(0.01)
    return (channel.recv_exit_status() if channel.exit_status_ready() else -1), bytes(out), bytes(err)


def _run_watched(
    argv: list[str], local_tree: str | None, max_bytes: int | None, max_secs: float | None
) -> tuple[int, str]:
    """
    Run rsync; ``(exit code, the end of its stderr)``. With ``max_bytes``, ``local_tree`` is measured
    every 0.1 s while it runs, and once more after, and the transfer stopped once it holds more; with
    ``max_secs``, it is stopped once it ran that long.
    """
    deadline = time.monotonic() + max_secs if max_secs is not None else None
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while True:
                try:
                    proc.wait(timeout=0.1)
                    done = True
                except subprocess.TimeoutExpired:
                    done = False
                if max_bytes is not None and (size := _tree_bytes(local_tree)) > max_bytes:
                    raise DownloadTooLarge(f"the download reached {size} bytes, over its limit of {max_bytes}")
                if done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TransferTooSlow(f"the transfer did not end within {max_secs:.0f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # The end of stderr is what explains a failure; its size is the remote side's to choose.
        stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - 2000))
        return proc.returncode, stderr.read().decode("utf-8", "replace").strip()


def _tree_bytes(path: str) -> int:
    """The disk space the files and folders under ``path`` take (sparse files by their blocks)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue  # rsync renamed its temporary file meanwhile
    return total
