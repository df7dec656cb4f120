"""The ``ssh`` and ``rsync`` command lines that reach a training instance, built from quoted argv lists."""

from __future__ import annotations

import re
import shlex

# rsync exit codes worth another attempt: socket/protocol I/O, partial transfer, timeouts,
# and ssh's own 255 (connection failed or dropped).
RSYNC_TRANSIENT_EXIT_CODES = frozenset({10, 12, 23, 30, 35, 255})
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]]+$")
# The most a remote command may print: a poll prints a status line and at most 1 MiB of log, the
# others a few words. What the instance prints is the participant's to choose, so it is bounded.
MAX_OUTPUT_BYTES = 2 << 20


class RemoteOutputTooLarge(Exception):
    """A remote command printed more than :data:`MAX_OUTPUT_BYTES`: it was not read further."""


def check_address(address: str) -> str:
    """Return ``address`` if it is a plain host name or IP address, else raise ``ValueError``."""
    if not isinstance(address, str) or not _ADDRESS.match(address) or address.startswith("-"):
        raise ValueError(f"address must be an instance's IP address or host name, not {address!r}")
    return address


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """An OpenSSH ``known_hosts`` line pinning ``host_key`` (``"<type> <base64>"``) for host:port."""
    key_type, key_data = host_key.split()[:2]
    pattern = host if port == 22 else f"[{host}]:{port}"
    return f"{pattern} {key_type} {key_data}"


def ssh_argv(key_path: str, port: int, known_hosts_file: str, connect_timeout: int = 30) -> list[str]:
    """``ssh`` that uses only this key and only accepts the host keys in ``known_hosts_file``."""
    options = {
        "IdentitiesOnly": "yes",
        "BatchMode": "yes",
        "UserKnownHostsFile": known_hosts_file,
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "ConnectTimeout": str(connect_timeout),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
    }
    argv = ["ssh", "-F", "/dev/null", "-i", key_path, "-p", str(port)]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


# An upload copies the RAMP server's own files as they are. A download takes what a participant's
# code left on the instance: regular files and folders only (links, devices, FIFOs and sockets are
# skipped), with our permissions, never the instance's owners, groups or modes.
_UPLOAD = ("--archive",)
_DOWNLOAD = ("--recursive", "--times", "--no-links", "--no-devices", "--no-specials", "--chmod=D0755,F0644")


def rsync_argv(rsh: list[str], sources: list[str], destination: str, download: bool) -> list[str]:
    """``rsync`` of ``sources`` (all local, or all on one host) to ``destination`` over ``rsh``."""
    options = _DOWNLOAD if download else _UPLOAD
    return ["rsync", *options, "--partial", "--timeout=300", "-e", shlex.join(rsh), "--", *sources, destination]


def remote_spec(user: str, address: str, path: str) -> str:
    """rsync's ``user@host:path`` (IPv6 addresses bracketed)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{user}@{host}:{path}"
