"""A throwaway Redis on 127.0.0.1, the bench's Celery broker.

Debian's ``redis-server`` in the foreground, on a free port, bound to loopback, with no persistence
(nothing is saved, no append-only file) and its working folder in a temp dir; stopped by the PID
that we started, never by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile

from testbench._proc import free_port, stop_pid, tail, wait_until

REDIS_SERVER = "/usr/bin/redis-server"


@dataclasses.dataclass
class RedisServer:
    """Where the bench Redis listens, and its process."""

    port: int
    pid: int
    log_path: str

    @property
    def url(self) -> str:
        """The broker URL of database 0 (``[celery] broker_url``)."""
        return f"redis://127.0.0.1:{self.port}/0"


def ping(port: int) -> bool:
    """True when a Redis on ``127.0.0.1:port`` answers ``PING``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(timeout: float = 30.0):
    """Start ``redis-server``, wait (bounded) until it answers, yield a :class:`RedisServer`, always stop it."""
    base = tempfile.mkdtemp(prefix="bench-redis-")
    port, log_path = free_port(), os.path.join(base, "redis.log")
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--dir", base, "--logfile", ""]
    proc = None
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=base, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: proc.poll() is not None or ping(port), timeout, "redis-server to answer PING", 0.1)
        except TimeoutError:
            raise RuntimeError(f"redis-server not ready:\n{tail(log_path)}") from None
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited {proc.returncode}:\n{tail(log_path)}")
        yield RedisServer(port=port, pid=proc.pid, log_path=log_path)
    finally:
        if proc is not None:
            stop_pid(proc.pid, proc=proc)
        shutil.rmtree(base, ignore_errors=True)
