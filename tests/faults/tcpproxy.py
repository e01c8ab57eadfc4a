"""A tiny TCP proxy for fault tests: forward, or cut every connection and refuse new ones."""

from __future__ import annotations

import contextlib
import socket
import threading

from streamrec.io.broker import free_port


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``down()`` cuts the link, ``up()`` restores it.

    While down, existing connections are cut and the port refuses connections (as while a
    broker or database restarts); ``up()`` listens on the same port again.
    """

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._up = True
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False

    def __enter__(self) -> TcpProxy:
        self._listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        self._cut()

    def _listen(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        """Cut all connections and refuse new ones."""
        self._up = False
        self._listener.close()
        self._cut()

    def up(self) -> None:
        """Listen and forward again."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._up = True
        self._listen()

    def _cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:  # the pumps see EOF and close them
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._socks.discard(src)
        src.close()  # each socket is the source of exactly one pump
