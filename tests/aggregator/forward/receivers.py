"""Real receivers for forwarding tests, on free loopback ports: an HTTP server that checks Splunk HEC,
Elasticsearch `_bulk` and webhook payloads the way those services parse them, and a TCP/TLS syslog
listener that parses octet-counted RFC 5424 frames."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.localrun import wait_for


def _decode_concatenated(body: str) -> list[dict[str, Any]]:
    """HEC's /services/collector/event body: JSON objects one after another (whitespace between)."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    while pos < len(body):
        while pos < len(body) and body[pos].isspace():
            pos += 1
        if pos == len(body):
            break
        obj, pos = decoder.raw_decode(body, pos)
        out.append(obj)
    return out


class HttpReceiver:
    """`kind` is "hec", "bulk" or "webhook". What it accepted is in `events` (the documents) and, for
    _bulk, `index` (documents by `_id`, as Elasticsearch keeps them). `statuses` holds the HTTP
    statuses of the next responses (then 200); documents whose `event.id` or `metadata.uid` is in
    `reject_ids` are refused: per item by _bulk (400 mapper_parsing_exception), as a whole request
    with 400 by HEC and the webhook."""

    def __init__(self, kind: str, token: str = "", port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.kind = kind
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.hec_envelopes: list[dict[str, Any]] = []
        self.index: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.problems: list[str] = []
        self.statuses: list[int] = []
        self.reject_ids: set[str] = set()
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                receiver.connections.append(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    status, reply = receiver.handle(self.path, dict(self.headers), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "http") -> str:
        path = {"hec": "/services/collector/event", "bulk": "", "webhook": "/hook"}[self.kind]
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @staticmethod
    def doc_id(doc: dict[str, Any]) -> str:
        return str((doc.get("event") or {}).get("id") or (doc.get("metadata") or {}).get("uid") or "")

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if self.statuses:
            return self.statuses.pop(0), {"error": "injected"}
        if self.kind == "hec":
            return self._hec(path, headers, body)
        if self.kind == "bulk":
            return self._bulk(path, headers, body)
        return self._webhook(path, headers, body)

    def _hec(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path != "/services/collector/event":
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}
        if headers.get("Authorization") != f"Splunk {self.token}":
            return 401, {"text": "Invalid authorization", "code": 3}
        envelopes = _decode_concatenated(body.decode())
        for n, env in enumerate(envelopes):
            if "event" not in env or not isinstance(env.get("time"), float | int):
                self.problems.append(f"HEC envelope without event or time: {env}")
                return 400, {"text": "Event field is required", "code": 12, "invalid-event-number": n}
            if self.doc_id(env["event"]) in self.reject_ids:
                return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": n}
        self.hec_envelopes += envelopes
        self.events += [env["event"] for env in envelopes]
        return 200, {"text": "Success", "code": 0}

    def _bulk(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path != "/_bulk":
            return 404, {"error": f"no handler for {path}"}
        if headers.get("Content-Type") != "application/x-ndjson" or not body.endswith(b"\n"):
            return 400, {"error": "the bulk request must be NDJSON terminated by a newline"}
        lines = body.decode().split("\n")[:-1]
        if len(lines) % 2:
            return 400, {"error": "an action without a document"}
        items, errors = [], False
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            action, doc = json.loads(action_line), json.loads(doc_line)
            meta = action.get("create")
            if not isinstance(meta, dict) or not meta.get("_id") or not meta.get("_index"):
                self.problems.append(f"not a create action with _index and _id: {action}")
                return 400, {"error": "bad action"}
            if "@timestamp" not in doc:
                status, error = 400, {"type": "mapper_parsing_exception", "reason": "data stream needs @timestamp"}
            elif meta["_id"] in self.reject_ids:
                status, error = 400, {"type": "mapper_parsing_exception", "reason": "failed to parse field"}
            elif meta["_id"] in self.index:
                status, error = 409, {"type": "version_conflict_engine_exception", "reason": "document exists"}
            else:
                status, error = 201, None
                self.index[meta["_id"]] = doc
                self.events.append(doc)
            errors = errors or status >= 300
            items.append({"create": {"_index": meta["_index"], "_id": meta["_id"], "status": status,
                                     **({"error": error} if error else {"result": "created"})}})
        return 200, {"took": 1, "errors": errors, "items": items}

    def _webhook(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}
        docs = json.loads(body)
        if not isinstance(docs, list) or not headers.get("Idempotency-Key"):
            self.problems.append("webhook body is not a JSON array, or no Idempotency-Key")
            return 400, {"error": "expected a JSON array"}
        if any(self.doc_id(d) in self.reject_ids for d in docs):
            return 422, {"error": "unprocessable event"}
        self.events += docs
        return 200, {"ok": True}

    def ids(self) -> list[str]:
        with self.lock:
            return [self.doc_id(d) for d in self.events]

    def wait_for_events(self, n: int, timeout_s: float = 30) -> list[str]:
        wait_for(lambda: len(self.events) >= n, timeout_s, f"{n} events at the {self.kind} receiver "
                                                           f"(have {len(self.events)})")
        return self.ids()

    def stop(self) -> None:
        """Close the listener and every open connection: the receiver is down."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.thread.join(timeout=5)


FRAME = re.compile(rb"(\d+) ")
RFC5424 = re.compile(r"^<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
                     r"(?P<sd>\[.*?[^\\]\]) (?P<msg>.*)$", re.DOTALL)
SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class SyslogListener:
    """A syslog receiver over TCP, or TLS with `tls=(cert, key)`, that parses octet-counted frames
    (RFC 6587 3.4.1, RFC 5425 4.3) and checks each message against the RFC 5424 grammar."""

    def __init__(self, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.messages: list[str] = []
        self.problems: list[str] = []
        self.handshake_failures = 0
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                try:
                    conn = self.context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.handshake_failures += 1
                    return
            buf = b""
            while chunk := conn.recv(65536):
                buf += chunk
                while (m := FRAME.match(buf)) and len(buf) >= m.end() + int(m.group(1)):
                    self.messages.append(buf[m.end():m.end() + int(m.group(1))].decode())
                    buf = buf[m.end() + int(m.group(1)):]
                if buf and not FRAME.match(buf[:12]) and not buf[:12].isdigit():
                    self.problems.append(f"bytes outside any frame: {buf[:80]!r}")
                    return
        except OSError:
            return
        finally:
            conn.close()

    def parsed(self) -> list[re.Match[str]]:
        matches = [RFC5424.match(m) for m in self.messages]
        assert all(matches), [m for m, p in zip(self.messages, matches, strict=True) if p is None][:3]
        return [m for m in matches if m]

    def wait(self, n: int, timeout_s: float = 30) -> list[re.Match[str]]:
        wait_for(lambda: len(self.messages) >= n, timeout_s, f"{n} syslog messages (have {len(self.messages)})")
        return self.parsed()

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        self.thread.join(timeout=5)


def sd_params(match: re.Match[str]) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\]", "]").replace("\\\\", "\\")
            for k, v in SD_PARAM.findall(match.group("sd"))}
