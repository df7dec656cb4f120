"""The demo's one open door: its UI port, forwarded from this machine's loopback into its namespace.

The demo runs in a network namespace of its own, so a browser on the machine cannot reach its
api-server. The supervisor binds ``127.0.0.1:<port>`` here, in the machine's namespace, and hands
that listening socket to a relay started with ``nsenter --net`` in the demo's namespace: a socket
keeps the namespace it was made in, so the relay accepts on the machine's loopback and connects,
for each client, to ``127.0.0.1:<port>`` inside the demo (where the api-server listens on the same
port, so every URL and redirect reads the same on both sides). Nothing else is forwarded, and
nothing is reachable from the demo's side: the relay only accepts on the machine's side.

``python -m testbench.demo.forward <fd> <port>`` is the relay; :func:`start` launches it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

from testbench._proc import wait_until

# Bound on the relay's connect inside the namespace; the api-server answers at once or not at all.
CONNECT_TIMEOUT = 10


def listen() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1, in this process's namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _netns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def start(listener: socket.socket, pid: int, timeout: float = 30) -> subprocess.Popen:
    """Start the relay in the network namespace of process ``pid``; returns its process.

    :param listener: from :func:`listen`; the relay gets a copy, this one may be closed.
    :param pid: a process of the demo, started with ``unshare -n``; waited for (bounded) until it
        has its own namespace, so that the relay never connects on the machine's side.
    :param timeout: bound on that wait.
    """
    wait_until(lambda: _netns(pid) != _netns("self"), timeout, f"pid {pid} to enter its own network namespace")
    fd = listener.fileno()
    port = listener.getsockname()[1]
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-m", __name__, str(fd), str(port)]
    # In the caller's process group, so that whoever stops the group stops the relay too.
    return subprocess.Popen(argv, pass_fds=[fd], stdin=subprocess.DEVNULL)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        # One side went away: end both directions.
        for sock in (source, sink):
            sock.close()


def _serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except OSError:
        client.close()  # the api-server is not (or no longer) up: the browser sees a closed connection
        return
    upstream.settimeout(None)
    threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
    _pump(client, upstream)


def relay(listener: socket.socket, port: int) -> None:
    """Accept on ``listener`` forever; join each client to ``127.0.0.1:port`` of this namespace."""
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    # Ctrl-C in the terminal reaches the whole group; the supervisor stops the relay by PID, last.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    relay(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
