"""Alert outputs: a durable outbox, per-output cursors, suppression of repeats, and three transports.

    router = build_router([AlertOutputConfig(type="webhook", url="https://siem/hook", min_level="high")], state_dir)
    router.start()                      # background delivery thread (or call deliver_pending() yourself)
    router.submit(alerts)               # appended to the outbox and fsynced before it returns
    router.close()                      # one last delivery pass, cursors saved, connections closed

Design constraints (the invariants the tests check):

- **Outbox first.** `submit()` appends each alert, one JSON object per line, to
  `state_dir/outbox/NNNNNNNN.jsonl` and fsyncs before returning; only then may an output see it. A
  line torn by a crash (no final newline) was never acknowledged and is cut off at open.
- **A cursor per output.** Each output reads the outbox at its own position. The positions, the
  suppression state and the counters of every output are one file, `state_dir/cursors.json`
  (versioned, SHA-256 checked, written temp → fsync → rename → fsync(dir)), saved after an output's
  alerts are delivered and flushed. So an outage delays an output, never loses an alert, and never
  holds back the others; a crash between delivery and save sends again (at least once: receivers
  dedup on `event.id`, the deterministic alert id).
- **Stops at a transient failure.** A retryable failure (`RETRYABLE_HTTP_STATUS`, 5xx, a refused or
  broken connection, a full disk) leaves the cursor on that alert and backs the output off
  (`backoff_initial_ms` doubling to `backoff_max_ms`); order is kept. A permanent rejection (any
  other HTTP 4xx) writes the alert and the reason to `state_dir/dead-letter/<output>.jsonl` and goes
  on: one bad alert never blocks the rest.
- **Routing and suppression are per output**: alerts below `min_level` are skipped; with
  `suppress_window_s`, the first alert of a (rule id, group values) key goes out, repeats whose
  event time falls within the window of it are counted and held back, and the next alert of that
  key sent after the window carries `logseal.alert.suppressed_count`. Every skipped alert is counted.
- Segments all configured outputs have passed are deleted. A new output starts at the outbox end.

The syslog encoder (`encode_syslog`, `frame_octet_counted`) is pure and apart from the transport.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from agent.aggregator.forward.transport import peer_closed
from agent.aggregator.syslog_format import APP_NAME, SYSLOG_FACILITY, SYSLOG_SD_ID
from agent.aggregator.syslog_format import frame_octet_counted as frame_octet_counted  # re-exported
from agent.aggregator.syslog_format import printable as _printable
from agent.aggregator.syslog_format import sd_escape as _sd_escape
from agent.detect.alert import LEVELS, Alert, level_rank
from agent.durable import fsync_dir
from agent.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("file", "webhook", "syslog")
RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429})
"""Besides every 5xx: statuses that mean "later", not "never"."""
SEGMENT_MAX_BYTES = 8 << 20
"""Start a new outbox segment at this size (whole segments are deleted once every output passed them)."""
BATCH_MAX = 500
"""Alerts one output handles per delivery pass before its cursor is saved."""
CURSORS_VERSION = 1
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "informational": 6}
USER_AGENT = "logseal-alerts/0.1.0"


@dataclass(frozen=True)
class AlertOutputConfig:
    """One `[[alert_output]]` table. Validated at construction; ConfigError names the key and the fix."""

    type: str
    """"file" (JSON lines), "webhook" (HTTP POST of each alert's JSON) or "syslog" (RFC 5424 over TCP)."""
    path: Path | None = None
    """file: where alerts are appended, one JSON object per line."""
    url: str = ""
    """webhook: http:// or https:// URL that receives a POST per alert."""
    address: str = ""
    """syslog: host:port of a TCP receiver (octet-counted frames, RFC 6587 / RFC 5425)."""
    min_level: str = "informational"
    """Lowest Sigma level sent: informational, low, medium, high or critical."""
    suppress_window_s: int = 0
    """Repeats of a (rule, group) key within this many seconds of the last one sent are counted, not sent (0 = off)."""
    tls_ca: Path | None = None
    """webhook (https) or syslog: CA bundle the receiver's certificate must chain to; syslog uses TLS when set."""
    name: str = ""
    """Names the output's cursor and dead-letter file; default: type and a hash of the target."""
    timeout_s: int = 10
    """Connect and send timeout of one delivery attempt."""
    backoff_initial_ms: int = 1000
    """Wait after a first transient failure; doubles per failure ..."""
    backoff_max_ms: int = 60_000
    """... up to this."""

    def __post_init__(self) -> None:
        where = "alert_output"
        if self.type not in OUTPUT_TYPES:
            raise ConfigError(f"{where}.type: {self.type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        if self.type == "file" and self.path is None:
            raise ConfigError(f"{where}.path: is required for type = \"file\" (the JSON-lines file to append to)")
        if self.type == "webhook" and urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.url: {self.url!r} must be an http:// or https:// URL for type = \"webhook\"")
        if self.type == "syslog":
            host, sep, port = self.address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ConfigError(f"{where}.address: {self.address!r} is not host:port (e.g. siem.example:6514)")
        if self.min_level not in LEVELS:
            raise ConfigError(f"{where}.min_level: {self.min_level!r} is not one of {', '.join(LEVELS)}")
        for key in ("suppress_window_s", "backoff_initial_ms"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{where}.{key}: must be at least 0, got {getattr(self, key)}")
        for key in ("timeout_s", "backoff_max_ms"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: must be at least 1, got {getattr(self, key)}")
        if self.tls_ca is not None and self.type == "file":
            raise ConfigError(f"{where}.tls_ca: only for webhook or syslog outputs")
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"{where}.name: {self.name!r} may hold only letters, digits, '-', '_' and '.'")

    @property
    def target(self) -> str:
        return str(self.path) if self.type == "file" else self.url if self.type == "webhook" else self.address

    @property
    def key(self) -> str:
        """Stable name of this output's cursor and dead-letter file."""
        return self.name or f"{self.type}-{hashlib.sha256(self.target.encode()).hexdigest()[:12]}"


# -- results and the output interface ---------------------------------------------------------------


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: keep the alert, back off, try again later
    REJECTED = "rejected"  # permanent: dead-letter it and go on
    SKIPPED = "skipped"  # not for this output (below min_level, suppressed, corrupt): counted, go on


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reason: str = ""


DELIVERED = SendResult(Outcome.DELIVERED)


class Output(Protocol):
    config: AlertOutputConfig

    def send(self, doc: dict[str, Any], line: bytes) -> SendResult:
        """Deliver one alert (its document and its JSON, no newline)."""
        ...

    def flush(self) -> SendResult:
        """Make what was sent durable (called before the cursor moves past it)."""
        ...

    def close(self) -> None: ...


# -- the pure syslog encoder ------------------------------------------------------------------------


def encode_syslog(doc: dict[str, Any], hostname: str) -> bytes:
    """An alert document as one RFC 5424 message: header, `[logseal@32473 ...]`, and the alert JSON as MSG."""
    rule = doc.get("rule") or {}
    event = doc.get("event") or {}
    level = str(rule.get("level", "informational"))
    pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY.get(level, 6)
    stamp = str(doc.get("@timestamp") or "-")
    params = (("id", event.get("id", "")), ("rule_id", rule.get("id", "")), ("rule", rule.get("name", "")),
              ("level", level), ("severity", event.get("severity", "")),
              ("suppressed", ((doc.get("logseal") or {}).get("alert") or {}).get("suppressed_count", 0)))
    sd = f"[{SYSLOG_SD_ID} " + " ".join(f'{k}="{_sd_escape(str(v))}"' for k, v in params) + "]"
    header = f"<{pri}>1 {_printable(stamp, 64)} {_printable(hostname, 255)} {APP_NAME} - ALERT {sd} "
    return header.encode() + json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- transports -------------------------------------------------------------------------------------


class FileOutput:
    def __init__(self, config: AlertOutputConfig) -> None:
        assert config.path is not None
        self.config = config
        self.path = config.path
        self._file: Any = None

    def send(self, doc: dict[str, Any], line: bytes) -> SendResult:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(line + b"\n")
        except OSError as exc:
            self.close()
            return SendResult(Outcome.RETRY, f"cannot append to {self.path}: {exc.strerror}")
        return DELIVERED

    def flush(self) -> SendResult:
        if self._file is None:
            return DELIVERED
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.close()
            return SendResult(Outcome.RETRY, f"cannot fsync {self.path}: {exc.strerror}")
        return DELIVERED

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _client_context(ca: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca) if ca else None)


class WebhookOutput:
    def __init__(self, config: AlertOutputConfig) -> None:
        self.config = config
        self._context = _client_context(config.tls_ca) if config.url.startswith("https:") else None

    def send(self, doc: dict[str, Any], line: bytes) -> SendResult:
        alert_id = str((doc.get("event") or {}).get("id", ""))
        request = urllib.request.Request(self.config.url, data=line, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, "Idempotency-Key": alert_id})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=self._context) as response:
                response.read()
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            return SendResult(Outcome.RETRY, f"POST {self.config.url}: {getattr(exc, 'reason', exc)}")
        if 200 <= status < 300:
            return DELIVERED
        if status >= 500 or status in RETRYABLE_HTTP_STATUS:
            return SendResult(Outcome.RETRY, f"POST {self.config.url}: HTTP {status}")
        return SendResult(Outcome.REJECTED, f"POST {self.config.url}: HTTP {status}")

    def flush(self) -> SendResult:
        return DELIVERED

    def close(self) -> None:
        pass


class SyslogOutput:
    """One long-lived TCP (or TLS) connection; a dead one is noticed before the next send and reopened.

    TCP gives no application ack: a frame written just before the receiver dies can be lost.
    """

    def __init__(self, config: AlertOutputConfig, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        host, _, port = config.address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._context = _client_context(config.tls_ca) if config.tls_ca else None
        self._sock: socket.socket | None = None

    def _connected(self) -> socket.socket:
        sock = self._sock
        if sock is not None and peer_closed(sock, self.config.timeout_s):
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.config.timeout_s)
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self.host)
                except (OSError, ssl.SSLError):
                    sock.close()
                    raise
            self._sock = sock
        return sock

    def send(self, doc: dict[str, Any], line: bytes) -> SendResult:
        try:
            self._connected().sendall(frame_octet_counted(encode_syslog(doc, self.hostname)))
        except OSError as exc:
            self.close()
            return SendResult(Outcome.RETRY, f"syslog {self.config.address}: {exc}")
        return DELIVERED

    def flush(self) -> SendResult:
        return DELIVERED

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def make_output(config: AlertOutputConfig, hostname: str | None = None) -> Output:
    if config.type == "file":
        return FileOutput(config)
    if config.type == "webhook":
        return WebhookOutput(config)
    return SyslogOutput(config, hostname or socket.gethostname())


# -- suppression (pure) -----------------------------------------------------------------------------


def _event_seconds(doc: dict[str, Any]) -> float:
    text = str(doc.get("@timestamp") or "")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def suppression_key(doc: dict[str, Any]) -> str:
    detail = (doc.get("logseal") or {}).get("alert") or {}
    return json.dumps([(doc.get("rule") or {}).get("id"), detail.get("group") or {}], sort_keys=True)


@dataclass
class Suppressor:
    """Per (rule, group) key: [event time of the last alert sent, repeats held back since]."""

    window_s: float
    keys: dict[str, list[float]] = field(default_factory=dict)
    max_keys: int = 100_000

    def admit(self, doc: dict[str, Any]) -> tuple[dict[str, Any] | None, Callable[[], None]]:
        """(the document to send, carrying `suppressed_count`, or None when held back; an undo)."""
        if self.window_s <= 0:
            return doc, lambda: None
        key, now = suppression_key(doc), _event_seconds(doc)
        before = self.keys.get(key)
        saved = list(before) if before is not None else None

        def undo() -> None:
            if saved is None:
                self.keys.pop(key, None)
            else:
                self.keys[key] = saved

        if before is not None and 0 <= now - before[0] < self.window_s:
            before[1] += 1
            return None, undo
        held = int(before[1]) if before is not None else 0
        self.keys.pop(key, None)
        self.keys[key] = [now, 0]
        while len(self.keys) > self.max_keys:  # oldest first (dicts keep insertion order)
            del self.keys[next(iter(self.keys))]
        if held:
            doc = json.loads(json.dumps(doc))
            doc.setdefault("logseal", {}).setdefault("alert", {})["suppressed_count"] = held
        return doc, undo


# -- the outbox -------------------------------------------------------------------------------------


Position = tuple[int, int]  # (segment number, byte offset)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Outbox:
    """Segmented JSON lines. Appends under the caller's lock; reads up to a known end need none."""

    def __init__(self, folder: Path, segment_max_bytes: int = SEGMENT_MAX_BYTES) -> None:
        self.folder = folder
        self.segment_max_bytes = segment_max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        numbers = sorted(int(p.stem) for p in folder.glob("*.jsonl") if p.stem.isdigit())
        self.first = numbers[0] if numbers else 1
        self.current = numbers[-1] if numbers else 1
        path = self._path(self.current)
        data = path.read_bytes() if path.exists() else b""
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            log.warning("outbox ends in a torn line; cutting it off",
                        extra={"path": str(path), "bytes": len(data) - keep})
            with path.open("r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
        self.size = keep
        self._file = path.open("ab")

    def _path(self, number: int) -> Path:
        return self.folder / f"{number:08d}.jsonl"

    @property
    def end(self) -> Position:
        return (self.current, self.size)

    @property
    def start(self) -> Position:
        return (self.first, 0)

    def append(self, lines: Sequence[bytes]) -> None:
        if self.size >= self.segment_max_bytes:
            self._file.close()
            self.current, self.size = self.current + 1, 0
            self._file = self._path(self.current).open("ab")
            fsync_dir(self.folder)
        blob = b"".join(line + b"\n" for line in lines)
        self._file.write(blob)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size += len(blob)

    def read(self, position: Position, end: Position, limit: int) -> list[tuple[Position, bytes]]:
        """Up to `limit` lines from `position` (never past `end`), each with the position after it.

        The end of a finished segment and the start of the next are the same place."""
        out: list[tuple[Position, bytes]] = []
        segment, offset = max(position, self.start)
        while len(out) < limit and (segment, offset) < end:
            try:
                with self._path(segment).open("rb") as f:
                    f.seek(offset)
                    data = f.read() if segment != end[0] else f.read(max(0, end[1] - offset))
            except FileNotFoundError:
                data = b""
            cursor = 0
            while len(out) < limit and (nl := data.find(b"\n", cursor)) >= 0:
                out.append(((segment, offset + nl + 1), data[cursor:nl]))
                cursor = nl + 1
            segment, offset = segment + 1, 0
        return out

    def prune(self, keep_from: int) -> None:
        """Delete whole segments before `keep_from` (never the current one)."""
        while self.first < min(keep_from, self.current):
            with contextlib.suppress(FileNotFoundError):
                self._path(self.first).unlink()
            self.first += 1

    def close(self) -> None:
        self._file.close()


# -- the router -------------------------------------------------------------------------------------


@dataclass
class OutputState:
    position: Position
    suppressor: Suppressor
    counters: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    next_attempt: float = 0.0
    last_error: str = ""

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class AlertRouter:
    def __init__(self, outputs: Sequence[Output], state_dir: Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.outputs = list(outputs)
        keys = [o.config.key for o in self.outputs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ConfigError(f"alert_output: two outputs share the name {dup!r}; give them distinct `name`s")
        self.state_dir = state_dir
        self.clock = clock
        state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(state_dir / "outbox")
        self.cursors_path = state_dir / "cursors.json"
        self.dead_letter_dir = state_dir / "dead-letter"
        self._lock = threading.Lock()  # outbox appends
        self._deliver_lock = threading.Lock()  # one delivery pass at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.corrupt_lines = 0
        self.states = self._load_states()
        self._save()

    # -- state ---------------------------------------------------------------------------------------

    def _load_states(self) -> dict[str, OutputState]:
        saved: dict[str, Any] = {}
        fresh_start = self.outbox.end  # new outputs begin at the end ...
        if self.cursors_path.exists():
            try:
                saved = self._read_cursors()
            except ValueError as exc:  # ... but after a lost cursor file, resend rather than lose
                log.error("alert cursors unreadable; every output starts at the oldest kept alert",
                          extra={"path": str(self.cursors_path), "reason": str(exc)})
                fresh_start = self.outbox.start
        states = {}
        for out in self.outputs:
            item = saved.get(out.config.key)
            window = float(out.config.suppress_window_s)
            if isinstance(item, dict):
                pos = (int(item["position"][0]), int(item["position"][1]))
                states[out.config.key] = OutputState(
                    max(pos, self.outbox.start), Suppressor(window, {str(k): [float(v[0]), float(v[1])]
                                                                     for k, v in item["suppress"].items()}),
                    {str(k): int(v) for k, v in item["counters"].items()})
            else:
                states[out.config.key] = OutputState(fresh_start, Suppressor(window))
        return states

    def _read_cursors(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.cursors_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("version") != CURSORS_VERSION:
            raise ValueError(f"version {obj.get('version') if isinstance(obj, dict) else None!r}, "
                             f"expected {CURSORS_VERSION}")
        body = json.dumps(obj.get("outputs"), sort_keys=True, separators=(",", ":")).encode()
        if hashlib.sha256(body).hexdigest() != obj.get("sha256"):
            raise ValueError("checksum mismatch")
        outputs = obj["outputs"]
        if not isinstance(outputs, dict):
            raise ValueError("outputs is not a table")
        return outputs

    def _save(self) -> None:
        outputs = {k: {"position": list(s.position), "suppress": s.suppressor.keys, "counters": s.counters}
                   for k, s in self.states.items()}
        body = json.dumps(outputs, sort_keys=True, separators=(",", ":"))
        blob = json.dumps({"version": CURSORS_VERSION, "sha256": hashlib.sha256(body.encode()).hexdigest(),
                           "outputs": outputs}, sort_keys=True, separators=(",", ":")).encode()
        atomic_write(self.cursors_path, blob)

    # -- the three calls -----------------------------------------------------------------------------

    def submit(self, alerts: Iterable[Alert | dict[str, Any]]) -> int:
        """Append to the outbox (fsynced) and wake the delivery thread; the number appended."""
        lines = [(a.to_json() if isinstance(a, Alert) else json.dumps(a, separators=(",", ":"), ensure_ascii=False))
                 .encode() for a in alerts]
        if not lines:
            return 0
        with self._lock:
            self.outbox.append(lines)
            self.submitted += len(lines)
        self._wake.set()
        return len(lines)

    def deliver_pending(self) -> int:
        """One pass over every output that is not backing off; the number of alerts delivered."""
        with self._deliver_lock:
            with self._lock:
                end = self.outbox.end
            delivered = 0
            for output in self.outputs:
                state = self.states[output.config.key]
                if self.clock() < state.next_attempt:
                    continue
                delivered += self._deliver(output, state, end)
            self.outbox.prune(min((s.position[0] for s in self.states.values()), default=end[0]))
            return delivered

    def _deliver(self, output: Output, state: OutputState, end: Position) -> int:
        cfg, delivered, moved = output.config, 0, False
        failure = ""
        while state.position < end and not failure:
            records = self.outbox.read(state.position, end, BATCH_MAX)
            if not records:
                break
            for after, line in records:
                result = self._one(output, state, line)
                if result.outcome is Outcome.RETRY:
                    failure = result.reason
                    break
                if result.outcome is Outcome.DELIVERED:
                    delivered += 1
                state.position, moved = after, True
            flushed = output.flush()
            if flushed.outcome is not Outcome.DELIVERED:
                failure = flushed.reason
                break  # the cursor is not saved: what was written since the last save is sent again
            if moved:
                self._save()
                moved = False
        if failure:
            state.failures += 1
            delay = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * 2 ** min(state.failures - 1, 30)) / 1000
            state.next_attempt = self.clock() + delay
            state.count("retries")
            if state.last_error != failure:
                log.warning("alert output failing; will retry",
                            extra={"output": cfg.key, "delay_s": round(delay, 1), "reason": failure})
            state.last_error = failure
        elif state.failures:
            log.info("alert output recovered", extra={"output": cfg.key, "failures": state.failures})
            state.failures, state.next_attempt, state.last_error = 0, 0.0, ""
        return delivered

    def _one(self, output: Output, state: OutputState, line: bytes) -> SendResult:
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            self.corrupt_lines += 1
            state.count("corrupt")
            log.error("outbox line is not an alert; skipped", extra={"output": output.config.key, "bytes": len(line)})
            return SendResult(Outcome.SKIPPED, "corrupt outbox line")
        level = str((doc.get("rule") or {}).get("level", "informational"))
        if level_rank(level) < level_rank(output.config.min_level):
            state.count("below_min_level")
            return SendResult(Outcome.SKIPPED, "below min_level")
        admitted, undo = state.suppressor.admit(doc)
        if admitted is None:
            state.count("suppressed")
            return SendResult(Outcome.SKIPPED, "suppressed")
        body = line if admitted is doc else json.dumps(admitted, separators=(",", ":"), ensure_ascii=False).encode()
        result = output.send(admitted, body)
        if result.outcome is Outcome.RETRY:
            undo()
        elif result.outcome is Outcome.REJECTED:
            self._dead_letter(output.config.key, result.reason, admitted)
            state.count("dead_lettered")
        else:
            state.count("delivered")
        return result

    def _dead_letter(self, key: str, reason: str, doc: dict[str, Any]) -> None:
        self.dead_letter_dir.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"output": key, "reason": reason, "alert": doc}, separators=(",", ":"),
                            ensure_ascii=False)
        with (self.dead_letter_dir / f"{key}.jsonl").open("ab") as f:
            f.write(record.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        log.error("alert permanently rejected; written to the dead-letter file",
                  extra={"output": key, "reason": reason})

    # -- background delivery -------------------------------------------------------------------------

    def start(self, interval_s: float = 1.0) -> None:
        """Deliver on a background thread: at once after each submit, and every `interval_s` (retries)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.deliver_pending()
                except Exception:  # an output bug must not stop delivery of the others for good
                    log.exception("alert delivery pass failed; retrying")

        self._thread = threading.Thread(target=run, name="logseal-alert-outputs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, make one last delivery pass, save cursors, close outputs and the outbox."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self.deliver_pending()
        finally:
            self._save()
            for output in self.outputs:
                output.close()
            self.outbox.close()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per output: delivered, retries, dead_lettered, suppressed, below_min_level, corrupt, failing."""
        return {k: {**s.counters, "failing": int(bool(s.failures))} for k, s in self.states.items()}


def build_router(configs: Sequence[AlertOutputConfig], state_dir: Path, hostname: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> AlertRouter:
    return AlertRouter([make_output(c, hostname) for c in configs], state_dir, clock)
