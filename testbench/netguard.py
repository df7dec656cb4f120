"""Refuse, in the test process, any socket connection that leaves loopback.

The bench must never reach a real host (moto's made-up addresses belong to
somebody). Every Python-level connect goes through ``socket.socket.connect`` /
``connect_ex`` (``create_connection``, http clients, paramiko, asyncio all end
there), so wrapping those two catches them before a packet is sent. Unix
sockets are allowed; host names other than ``localhost`` are refused rather
than resolved. Violations are also recorded, so a test that swallows the
exception still fails. Subprocesses (ssh, rsync) are not covered here: running
the suite under ``unshare -n`` covers them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

violations: list[str] = []


class NonLoopbackConnection(OSError):
    """Raised instead of connecting to an address outside 127.0.0.0/8 and ::1."""


def is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def check_address(family, address) -> None:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else address
    if not is_loopback(host):
        message = f"connection to non-loopback address {address!r} refused"
        violations.append(message)
        raise NonLoopbackConnection(message)


@contextlib.contextmanager
def loopback_only():
    """Install the guard on ``socket.socket`` for the duration of the block."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self, address):
        check_address(self.family, address)
        return original_connect(self, address)

    def connect_ex(self, address):
        check_address(self.family, address)
        return original_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    try:
        yield violations
    finally:
        socket.socket.connect = original_connect
        socket.socket.connect_ex = original_connect_ex
