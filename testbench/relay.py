"""A TCP relay on loopback to a loopback port, which a test can cut and restore, as a network outage.

Cut, it closes every connection it carries and stops listening, so that a new connection is refused;
restored, it listens again on the same port. Stopping a server would not do: moto's threaded server
keeps serving the keep-alive connections it has, and keeps its socket open after ``stop()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from testbench.ec2 import LOOPBACK


class Relay:
    """Relays ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; see the module's docstring."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0  # chosen at the first listen, kept across a cut
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._start(self._accept, listener)

    def cut(self) -> None:
        """Close every relayed connection and stop listening: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        for sock in [listener, *sockets] if listener else sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        assert not self._threads, f"relay threads still running after the cut: {self._threads}"

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the cut closed the listener
                return
            upstream = socket.create_connection((LOOPBACK, self.target_port))
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay_to(target_port: int) -> Iterator[Relay]:
    """A listening :class:`Relay` to ``target_port``, cut (everything closed) at the end."""
    relay = Relay(target_port)
    relay.listen()
    try:
        yield relay
    finally:
        relay.cut()
