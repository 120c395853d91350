"""A TCP forwarder the chaos harness controls: it can cut every connection and refuse new ones.

`cut()` closes every forwarded connection at once (both sides see a reset) and refuses new ones:
they are accepted and closed at once with a reset, as a dropped route would look to gRPC.
`restore()` forwards again. The upstream (the aggregator) may itself be down: a client is then
closed the same way, and reconnects as it would to the real address.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def _reset(sock: socket.socket) -> None:
    """End a connection abruptly; `shutdown` also wakes a thread blocked in `recv` on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, one thread per direction."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refusing = False
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counters: dict[str, int] = {"accepted": 0, "refused": 0, "upstream_failed": 0, "cut_connections": 0}
        self._acceptor = threading.Thread(target=self._accept_loop, name="chaos-proxy-accept", daemon=True)

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    @property
    def refusing(self) -> bool:
        return self._refusing

    def cut(self) -> int:
        """Cut every open connection and refuse new ones until `restore()`; returns how many were cut."""
        with self._lock:
            self._refusing = True
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        self.counters["cut_connections"] += len(pairs)
        return len(pairs)

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._acceptor.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                self.counters["refused"] += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                self.counters["upstream_failed"] += 1
                _reset(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._refusing:  # cut while we were connecting
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.append((client, upstream))
            self.counters["accepted"] += 1
            self._threads = [t for t in self._threads if t.is_alive()]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst, client, upstream), daemon=True,
                                          name="chaos-proxy-pump")
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the pair (a half-open gRPC connection is of no use to either side).
        with self._lock:
            if (client, upstream) in self._pairs:
                self._pairs.remove((client, upstream))
        _reset(client)
        _reset(upstream)
