"""The I/O of forwarding: one HTTP POST, one long-lived syslog connection (TCP or TLS).

Failures become `TransportError` with a one-line reason that never holds the token.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

USER_AGENT = "logseal-forward/0.1.0"


def peer_closed(sock: socket.socket, timeout_s: float) -> bool:
    """Has a syslog receiver closed this connection? A receiver never speaks, so readable means closed
    or reset, or (TLS 1.3) a session ticket, which must not make us wait for more."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    sock.settimeout(0)
    try:
        return sock.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout_s)


class TransportError(Exception):
    """The receiver could not be reached or the exchange broke off (always transient)."""


def client_context(ca: Path | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpClient:
    """POSTs to one URL over a kept-alive connection (reopened after any failure)."""

    def __init__(self, url: str, timeout_s: float, context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port
        self.https = parts.scheme == "https"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self.context = context
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                         context=self.context)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, response body); TransportError when no response arrived."""
        all_headers = {"User-Agent": USER_AGENT, "Content-Length": str(len(body)), **headers}
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile is retried once
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return int(response.status), data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise TransportError(f"POST {self.url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(f"POST {self.url}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def abort(self) -> None:
        """From another thread: break off a request in flight (it fails as transient)."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


class SyslogConnection:
    """One TCP (or TLS) connection to a syslog receiver; a dead one is noticed before the next write.

    TCP gives no application ack: frames written just before the receiver dies can be lost unseen.
    """

    def __init__(self, address: str, timeout_s: float, context: ssl.SSLContext | None) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout_s = timeout_s
        self.context = context
        self._sock: socket.socket | None = None

    def _connected(self) -> socket.socket:
        sock = self._sock
        if sock is not None and peer_closed(sock, self.timeout_s):
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
                except (OSError, ssl.SSLError):
                    sock.close()
                    raise
            self._sock = sock
        return sock

    def send(self, frames: bytes) -> None:
        try:
            self._connected().sendall(frames)
        except OSError as exc:
            self.close()
            raise TransportError(f"syslog {self.address}: {exc}") from None

    def abort(self) -> None:
        """From another thread: break off a write in flight (it fails as transient)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
