"""Container logs as the kubelet's runtime writes them: CRI (containerd, CRI-O) and Docker json-file.

Accepted line shapes, detected per line:

* CRI: `<RFC 3339 time, up to ns> stdout|stderr <tag> <message>`, where the tag is `F` (the piece
  ends a line) or `P` (the line goes on in the next piece of the same stream), optionally followed
  by `:`-separated further tags. The message is taken as bytes: a runtime cuts long lines at a byte
  count, possibly inside a UTF-8 character, so pieces are joined before decoding.
* Docker json-file: `{"log": "...", "stream": "stdout", "time": "..."}`. A `log` ending in "\\n"
  ends a line; one that does not goes on in the next record of the same stream. Raw control
  characters inside strings (invalid JSON, tolerated by Fluent Bit) are accepted.

Pieces are held per (format, stream) until the piece that ends the line; the message is the
pieces' messages concatenated (without the Docker line's final "\\n"). stdout and stderr are
reassembled independently, as Fluent Bit does. Fields:

* `@timestamp`: the first piece's time, truncated to microseconds (the time of reception, with an
  `error.message`, when a Docker record has no usable `time`);
* `message`; `stream` (`stdout`/`stderr`: the name Filebeat's container input, Elastic's Kubernetes
  integration and Fluent Bit all use; ECS has no field for it);
* from `log.file.path` (the context's path): `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
  gives `kubernetes.pod.name`, `kubernetes.namespace`, `kubernetes.container.name`, `container.id`;
  `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log` (also rotated, `<n>.log.<suffix>`)
  gives `kubernetes.namespace`, `kubernetes.pod.name`, `kubernetes.pod.uid`,
  `kubernetes.container.name`, `kubernetes.container.restart_count` (n);
  `/var/lib/docker/containers/<id>/<id>-json.log` gives `container.id`.
* `event.original`: the raw lines of all pieces joined by "\\n"; `log.offset`: the first piece's.

Partial messages are never dropped; what is held is emitted as one event marked
`logseal.partial = true` (the next piece of that stream starts a new event marked
`logseal.continuation = true`) when:
* the held pieces of a stream exceed MAX_MESSAGE_BYTES (1 MiB of raw lines);
* the first held piece waited PARTIAL_TIMEOUT_US by `received` (`flush(force=False)`), or the
  stream ends (`flush(force=True)`), with an `error.message`;
* a line that is neither CRI nor Docker arrives (the stream was broken, as Fluent Bit treats it):
  all held pieces are emitted first, then the line as an unparsed event (its text also in `message`).

A message whose bytes are not UTF-8 is decoded with U+FFFD replacements and gets an `error.message`
(the exact bytes are in `logseal.original_base64`, as whenever the raw lines are not UTF-8). The
assembler never raises.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from agent.normalize.assemble import HeldLine, NormalizeOptions
from agent.normalize.common import OUTCOME_UNKNOWN, Event, SourceContext, base_event, format_timestamp, unparsed_event

DATASET = "container.log"
MAX_MESSAGE_BYTES = 1 << 20
PARTIAL_TIMEOUT_US = 5_000_000

NOT_UTF8 = "cri: message is not valid UTF-8: decoded with U+FFFD replacements; exact bytes in logseal.original_base64"

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_CONTROL = re.compile(rb"[\x00-\x1f]")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTAINERS_LOG = re.compile(r"([a-z0-9][-a-z0-9.]*)_([a-z0-9][-a-z0-9]*)_(.+)-([0-9a-f]{64})\.log")
_POD_DIR = re.compile(r"([a-z0-9][-a-z0-9]*)_([a-z0-9][-a-z0-9.]*)_([0-9a-fA-F-]+)")
_RESTART_FILE = re.compile(r"(\d+)\.log(?:\..+)?")


def _canonical_time(text: str) -> str | None:
    """RFC 3339 with up to nanoseconds -> canonical microseconds UTC (truncated), or None."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), int(micro))
    except ValueError:
        return None
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        try:
            moment -= sign * dt.timedelta(hours=hours, minutes=minutes)
        except OverflowError:
            return None
        return format_timestamp(moment.replace(tzinfo=dt.UTC))
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro}Z"


def _lenient_json(line: bytes) -> Any:
    """The record with raw control characters escaped (Fluent Bit accepts them in strings), or None."""
    if _CONTROL.search(line) is None:
        return None
    try:
        return orjson.loads(_CONTROL.sub(lambda m: b"\\u%04x" % m[0][0], line))
    except orjson.JSONDecodeError:
        return None


def path_metadata(path: str) -> dict[str, Any]:
    """Kubernetes / container metadata named by a container log's path (empty when it names none)."""
    parts = path.split("/")
    base = parts[-1]
    meta: dict[str, Any] = {}
    match = _CONTAINERS_LOG.fullmatch(base)
    if match is not None:
        pod, namespace, container, container_id = match.groups()
        meta["kubernetes"] = {"pod": {"name": pod}, "namespace": namespace, "container": {"name": container}}
        meta["container"] = {"id": container_id}
        return meta
    if len(parts) >= 3:
        pod_dir = _POD_DIR.fullmatch(parts[-3])
        restart = _RESTART_FILE.fullmatch(base)
        if pod_dir is not None and restart is not None and parts[-2]:
            namespace, pod, uid = pod_dir.groups()
            meta["kubernetes"] = {
                "pod": {"name": pod, "uid": uid}, "namespace": namespace,
                "container": {"name": parts[-2], "restart_count": int(restart.group(1)[:9])},
            }
            return meta
        if base.endswith("-json.log") and _HEX64.fullmatch(parts[-2]) and base == parts[-2] + "-json.log":
            meta["container"] = {"id": parts[-2]}
    return meta


def _copy(value: Any) -> Any:
    return {key: _copy(item) for key, item in value.items()} if isinstance(value, dict) else value


class _Pending:
    """The held pieces of one unfinished message (one stream of one format)."""

    __slots__ = ("lines", "seqs", "pieces", "size", "timestamp", "stream", "errors", "continuation")

    def __init__(self, timestamp: str, stream: str, continuation: bool) -> None:
        self.lines: list[HeldLine] = []
        self.seqs: list[int] = []
        self.pieces: list[bytes] = []
        self.size = 0
        self.timestamp = timestamp
        self.stream = stream
        self.errors: list[str] = []
        self.continuation = continuation


class CriAssembler:
    """CRI and Docker json-file container logs with partial-line reassembly (see the module docstring)."""

    def __init__(self, ctx: SourceContext, options: NormalizeOptions) -> None:
        self._ctx = ctx
        self._meta = path_metadata(ctx.path)
        self._pending: dict[tuple[bool, str], _Pending] = {}
        self._continues: set[tuple[bool, str]] = set()
        self._seq = 0
        self._counters: dict[str, int] = {}

    # -- the Assembler interface ------------------------------------------------------------------

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        self._seq += 1
        held = HeldLine(line, offset, received)
        try:
            return self._feed(held, received)
        except Exception as exc:  # the invariant: never raise, never lose a line
            taken = any(line is held for pending in self._pending.values() for line in pending.lines)
            out = self._emit_pending(list(self._pending), received, "cri: internal error")
            if not taken:
                out.append(unparsed_event(line=line, offset=offset, ctx=self._ctx, received=received,
                                          dataset=DATASET,
                                          error=f"cri: internal error: {type(exc).__name__}: {str(exc)[:80]}"))
            return out

    def flush(self, received: str, force: bool = False) -> list[Event]:
        if not self._pending:
            return []
        if force:
            return self._emit_pending(list(self._pending), received,
                                      "cri: partial line never finished: the stream ended first")
        try:
            moment = dt.datetime.fromisoformat(received)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            deadline = format_timestamp(moment - dt.timedelta(microseconds=PARTIAL_TIMEOUT_US))
        except (ValueError, OverflowError):
            return []  # not a time: nothing can be judged due
        due = [key for key, pending in self._pending.items() if pending.lines[0].received <= deadline]
        return self._emit_pending(due, received, "cri: partial line not finished within "
                                  f"{PARTIAL_TIMEOUT_US // 1_000_000} s: emitted as it is")

    def held(self) -> list[HeldLine]:
        pairs = [(seq, line) for pending in self._pending.values() for seq, line in zip(pending.seqs, pending.lines,
                                                                                        strict=True)]
        pairs.sort(key=lambda pair: pair[0])
        return [line for _, line in pairs]

    def counters(self) -> dict[str, int]:
        return self._counters

    # -- reading ----------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def _feed(self, held: HeldLine, received: str) -> list[Event]:
        line = held.line
        errors: list[str] = []
        parsed = self._docker(line, received, errors) if line[:1] == b"{" else self._cri(line)
        if parsed is None:
            out = self._emit_pending(list(self._pending), received,
                                     "cri: partial line interrupted by a line that is not a container log record")
            event = unparsed_event(line=line, offset=held.offset, ctx=self._ctx, received=received,
                                   dataset=DATASET, error=errors[0] if errors else
                                   "cri: neither a CRI nor a Docker json-file log line")
            event["message"] = event["event"]["original"]  # passed through as text, as Fluent Bit does
            out.append(event)
            return out
        key, timestamp, stream, piece, done = parsed
        pending = self._pending.get(key)
        if pending is None:
            continuation = key in self._continues
            if done:
                if continuation:
                    self._continues.discard(key)
                return [self._event([held], [piece], timestamp, stream, errors, partial=False,
                                    continuation=continuation)]
            pending = _Pending(timestamp, stream, continuation)
            self._continues.discard(key)
            self._pending[key] = pending
        pending.lines.append(held)
        pending.seqs.append(self._seq)
        pending.pieces.append(piece)
        pending.size += len(line) + 1
        pending.errors.extend(errors)
        if done:
            del self._pending[key]
            return [self._event(pending.lines, pending.pieces, pending.timestamp, pending.stream, pending.errors,
                                partial=False, continuation=pending.continuation)]
        if pending.size > MAX_MESSAGE_BYTES:
            self._count("split_over_max_message_bytes")
            del self._pending[key]
            self._continues.add(key)
            return [self._event(pending.lines, pending.pieces, pending.timestamp, pending.stream, pending.errors,
                                partial=True, continuation=pending.continuation)]
        return []

    def _cri(self, line: bytes) -> tuple[tuple[bool, str], str, str, bytes, bool] | None:
        stamp, _, rest = line.partition(b" ")
        stream_bytes, _, rest = rest.partition(b" ")
        if stream_bytes != b"stdout" and stream_bytes != b"stderr":
            return None
        tag, _, message = rest.partition(b" ")
        first = tag.partition(b":")[0]
        if first != b"F" and first != b"P":
            return None
        timestamp = _canonical_time(stamp.decode("ascii", "replace"))
        if timestamp is None:
            return None
        stream = stream_bytes.decode("ascii")
        return (False, stream), timestamp, stream, message, first == b"F"

    def _docker(self, line: bytes, received: str,
                errors: list[str]) -> tuple[tuple[bool, str], str, str, bytes, bool] | None:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            record = _lenient_json(line)
            if record is None:
                errors.append(f"cri: bad Docker json-file line: {str(exc)[:80]}")
                return None
        if not isinstance(record, dict) or not isinstance(record.get("log"), str):
            errors.append("cri: JSON line without a \"log\" string: not a Docker json-file record")
            return None
        log: str = record["log"]
        stream = record.get("stream")
        if not isinstance(stream, str):
            stream = ""
        time = record.get("time")
        timestamp = _canonical_time(time) if isinstance(time, str) else None
        if timestamp is None:
            errors.append("cri: Docker record without a usable \"time\": @timestamp is the time of reception")
            timestamp = received
        done = log.endswith("\n")
        piece = (log[:-1] if done else log).encode("utf-8", "surrogatepass")
        return (True, stream), timestamp, stream, piece, done

    # -- events -----------------------------------------------------------------------------------

    def _emit_pending(self, keys: list[tuple[bool, str]], received: str, error: str) -> list[Event]:
        batch = [self._pending.pop(key) for key in keys if key in self._pending]
        batch.sort(key=lambda pending: pending.seqs[0])
        out: list[Event] = []
        for pending in batch:
            self._count("partial_emitted")
            out.append(self._event(pending.lines, pending.pieces, pending.timestamp, pending.stream,
                                   [*pending.errors, error], partial=True, continuation=pending.continuation))
        return out

    def _event(self, lines: list[HeldLine], pieces: list[bytes], timestamp: str, stream: str, errors: list[str],
               *, partial: bool, continuation: bool) -> Event:
        raw = lines[0].line if len(lines) == 1 else b"\n".join(held.line for held in lines)
        event = base_event(line=raw, offset=lines[0].offset, ctx=self._ctx, timestamp=timestamp, dataset=DATASET,
                           action="log", outcome=OUTCOME_UNKNOWN, category=[], types=["info"])
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        try:
            event["message"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["message"] = body.decode("utf-8", "replace")
            errors = [*errors, NOT_UTF8]
        if stream:
            event["stream"] = stream
        for key, value in self._meta.items():
            event[key] = _copy(value)
        if partial or continuation:
            marks = event.setdefault("logseal", {})
            if partial:
                marks["partial"] = True
            if continuation:
                marks["continuation"] = True
        if errors:
            event["error"] = {"message": "; ".join(errors)}
        return event


def make_assembler(ctx: SourceContext, options: NormalizeOptions) -> CriAssembler:
    return CriAssembler(ctx, options)
