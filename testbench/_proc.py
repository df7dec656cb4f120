"""Process and port helpers shared by the bench services.

Every service the bench starts is stopped by the PID it was given, with a
bounded wait, never by name: a test run must not kill anything it did not start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Send ``sig`` to ``pid``, wait (bounded) for it to exit, then SIGKILL."""
    if proc is not None and proc.poll() is not None:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return

    def gone():
        if proc is not None:
            return proc.poll() is not None
        return not pid_alive(pid)

    try:
        wait_until(gone, timeout, f"pid {pid} to exit")
    except TimeoutError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if proc is not None:
            proc.wait(timeout=timeout)
        else:
            wait_until(gone, timeout, f"pid {pid} to die")


def tcp_banner(port: int, prefix: bytes, host: str = "127.0.0.1") -> bool:
    """True when a server on ``host:port`` answers with ``prefix`` (e.g. b'SSH-')."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(len(prefix)) == prefix
    except OSError:
        return False


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def process_table() -> list[tuple[int, int, int, str]]:
    """``(pid, ppid, pgid, state)`` of every process, read from /proc (state ``Z``: a zombie)."""
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name, in parentheses, may hold spaces: split after its closing one.
                state, ppid, pgid = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        table.append((int(entry), int(ppid), int(pgid), state))
    return table


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    return [child for child, ppid, _, _ in process_table() if ppid == pid]


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group ``pgid`` (zombies excluded)."""
    return [member for member, _, group, state in process_table() if group == pgid and state != "Z"]
