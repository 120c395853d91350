"""The systemd journal, as written by `journalctl -o export` or `journalctl -o json` (one source, either form).

Input: the lines of the stream, each without its newline. Two forms, detected per entry:

* export (`-o export`, the journal export format): an entry is `KEY=value` lines ended by an empty
  line. A field whose value may hold newlines or other bytes is written in binary form: `KEY`, a
  newline, the value's length as a little-endian u64, the raw value and a newline. Such a value (or
  even its length) may contain b"\\n", so it arrives over several fed lines; the assembler rejoins
  them with b"\\n" and reads exactly the announced length.
* json (`-o json`): one JSON object per line, complete at once. Values are strings, arrays of byte
  numbers (binary values), arrays of those (a field repeated in one entry), or null (a value
  journalctl left out for size).

Fields follow Filebeat's journald input (filebeat/input/journald/pkg/journalfield, the oracle of
the tests): `message`, `message_id`, `host.hostname` (_HOSTNAME), `host.id` (_MACHINE_ID),
`log.syslog.priority` (PRIORITY, as Filebeat: it is the severity 0-7, also given as
`log.syslog.severity.code`), `log.syslog.facility.code`, `log.syslog.appname` (SYSLOG_IDENTIFIER),
`log.syslog.procid` (SYSLOG_PID), `systemd.*` (unit, user_unit, slice, user_slice, cgroup, session,
owner_uid, invocation_id, transport), `journald.*` (pid, uid, gid, audit, host.boot_id, process.*,
code.*, kernel.*, object.*, coredump.*, unit), `container.*` (docker's journald driver), and every
other field under `journald.custom.<key lower-cased, leading "_" removed>`. As Filebeat, the ECS
`process.*` (pid, command_line, args, args_count, thread.capabilities.effective) and `user.id` /
`user.group.id` (or `user.effective.*` when the audit login uid differs) are derived from them;
unlike Filebeat (whose lookup of the name and executable misses), `process.name` (_COMM) and
`process.executable` (_EXE) are set too. Additionally: `log.syslog.hostname` (_HOSTNAME, as the
syslog family has it; `host.name` stays the node) and `journald.cursor` (__CURSOR: the pipeline
resumes `journalctl --after-cursor` from the last sealed event's cursor). Dropped, as Filebeat:
__MONOTONIC_TIMESTAMP, __SEQNUM, __SEQNUM_ID, _SOURCE_REALTIME_TIMESTAMP,
_SOURCE_MONOTONIC_TIMESTAMP (all still in `event.original`). A field repeated in one entry gives a
list. Integer fields that are not integers keep their text (as Filebeat).

`@timestamp`: __REALTIME_TIMESTAMP (microseconds since the epoch); without a usable one, the time
of reception and an `error.message` saying so.

`event.original`: the raw bytes of all the entry's lines joined by b"\\n", its terminating empty
line included (so the events' originals, rejoined, are the stream); `log.offset` is the offset of
its first line. Empty lines before an entry belong to that entry. A line that cannot start an entry
(not `KEY=value`, not `KEY`, not `{`) becomes an unparsed event of its own; inside an entry it is
kept in the entry, which gets an `error.message`. A value that is not valid UTF-8 is decoded with
U+FFFD (`error.message` says so; the exact bytes are in `logseal.original_base64`, as always when
the entry's bytes are not UTF-8 - binary framing alone makes them so).

Bounds: an entry longer than MAX_ENTRY_BYTES without its empty line is emitted as it is, with an
`error.message`, and reading goes on. A binary length over that bound, or a value longer than its
announced length, means the `KEY` line was not a binary field: it is kept as a malformed line and
the lines after it are read again as fields.

`held()`: the lines of the incomplete entry. `flush(force=False)` returns nothing (journalctl
writes an entry at once); `flush(force=True)` emits the incomplete entry as best it can, with
`error.message` saying it was cut off. The assembler never raises.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from agent.normalize.assemble import HeldLine, NormalizeOptions
from agent.normalize.common import OUTCOME_UNKNOWN, Event, SourceContext, base_event, unparsed_event

DATASET = "journald"
MAX_ENTRY_BYTES = 16 << 20

NOT_UTF8 = "a value is not valid UTF-8: decoded with U+FFFD replacements; exact bytes in logseal.original_base64"

_KEY_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_MAX_KEY = 64
_EPOCH = dt.datetime(1970, 1, 1)

# Filebeat's conversion table: journal field -> (destinations, is_integer).
_TEXT = False
_INT = True
_CONVERSIONS: dict[str, tuple[tuple[tuple[str, ...], ...], bool]] = {
    "COREDUMP_UNIT": ((("journald", "coredump", "unit"),), _TEXT),
    "COREDUMP_USER_UNIT": ((("journald", "coredump", "user_unit"),), _TEXT),
    "OBJECT_AUDIT_LOGINUID": ((("journald", "object", "audit", "login_uid"),), _INT),
    "OBJECT_AUDIT_SESSION": ((("journald", "object", "audit", "session"),), _INT),
    "OBJECT_CMDLINE": ((("journald", "object", "process", "command_line"),), _TEXT),
    "OBJECT_COMM": ((("journald", "object", "process", "name"),), _TEXT),
    "OBJECT_EXE": ((("journald", "object", "process", "executable"),), _TEXT),
    "OBJECT_GID": ((("journald", "object", "gid"),), _INT),
    "OBJECT_PID": ((("journald", "object", "pid"),), _INT),
    "OBJECT_SYSTEMD_OWNER_UID": ((("journald", "object", "systemd", "owner_uid"),), _INT),
    "OBJECT_SYSTEMD_SESSION": ((("journald", "object", "systemd", "session"),), _TEXT),
    "OBJECT_SYSTEMD_UNIT": ((("journald", "object", "systemd", "unit"),), _TEXT),
    "OBJECT_SYSTEMD_USER_UNIT": ((("journald", "object", "systemd", "user_unit"),), _TEXT),
    "OBJECT_UID": ((("journald", "object", "uid"),), _INT),
    "_KERNEL_DEVICE": ((("journald", "kernel", "device"),), _TEXT),
    "_KERNEL_SUBSYSTEM": ((("journald", "kernel", "subsystem"),), _TEXT),
    "_SYSTEMD_INVOCATION_ID": ((("systemd", "invocation_id"),), _TEXT),
    "_SYSTEMD_USER_SLICE": ((("systemd", "user_slice"),), _TEXT),
    "_UDEV_DEVLINK": ((("journald", "kernel", "device_symlinks"),), _TEXT),
    "_UDEV_DEVNODE": ((("journald", "kernel", "device_node_path"),), _TEXT),
    "_UDEV_SYSNAME": ((("journald", "kernel", "device_name"),), _TEXT),
    "UNIT": ((("journald", "unit"),), _TEXT),
    "_AUDIT_LOGINUID": ((("journald", "audit", "login_uid"),), _INT),
    "_AUDIT_SESSION": ((("journald", "audit", "session"),), _TEXT),
    "_BOOT_ID": ((("journald", "host", "boot_id"),), _TEXT),
    "_CAP_EFFECTIVE": ((("journald", "process", "capabilities"),), _TEXT),
    "_CMDLINE": ((("journald", "process", "command_line"),), _TEXT),
    "CODE_FILE": ((("journald", "code", "file"),), _TEXT),
    "CODE_FUNC": ((("journald", "code", "func"),), _TEXT),
    "CODE_LINE": ((("journald", "code", "line"),), _INT),
    "_COMM": ((("journald", "process", "name"),), _TEXT),
    "_EXE": ((("journald", "process", "executable"),), _TEXT),
    "_GID": ((("journald", "gid"),), _INT),
    "_HOSTNAME": ((("host", "hostname"), ("log", "syslog", "hostname")), _TEXT),
    "_MACHINE_ID": ((("host", "id"),), _TEXT),
    "MESSAGE": ((("message",),), _TEXT),
    "MESSAGE_ID": ((("message_id",),), _TEXT),
    "_PID": ((("journald", "pid"),), _INT),
    "PRIORITY": ((("log", "syslog", "priority"), ("log", "syslog", "severity", "code")), _INT),
    "SYSLOG_FACILITY": ((("log", "syslog", "facility", "code"),), _INT),
    "SYSLOG_IDENTIFIER": ((("log", "syslog", "appname"),), _TEXT),
    "SYSLOG_PID": ((("log", "syslog", "procid"),), _TEXT),
    "_SYSTEMD_CGROUP": ((("systemd", "cgroup"),), _TEXT),
    "_SYSTEMD_OWNER_UID": ((("systemd", "owner_uid"),), _INT),
    "_SYSTEMD_SESSION": ((("systemd", "session"),), _TEXT),
    "_SYSTEMD_SLICE": ((("systemd", "slice"),), _TEXT),
    "_SYSTEMD_UNIT": ((("systemd", "unit"),), _TEXT),
    "_SYSTEMD_USER_UNIT": ((("systemd", "user_unit"),), _TEXT),
    "_TRANSPORT": ((("systemd", "transport"),), _TEXT),
    "_UID": ((("journald", "uid"),), _INT),
    # docker's journald logging driver
    "CONTAINER_ID": ((("container", "id_truncated"),), _TEXT),
    "CONTAINER_ID_FULL": ((("container", "id"),), _TEXT),
    "CONTAINER_NAME": ((("container", "name"),), _TEXT),
    "CONTAINER_TAG": ((("container", "log", "tag"),), _TEXT),
    "CONTAINER_PARTIAL_MESSAGE": ((("container", "partial"),), _TEXT),
    "IMAGE_NAME": ((("container", "image", "name"),), _TEXT),
    # our own
    "__CURSOR": ((("journald", "cursor"),), _TEXT),
}
_DROPPED = frozenset({
    "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "__SEQNUM", "__SEQNUM_ID", "_SOURCE_REALTIME_TIMESTAMP",
    "_SOURCE_MONOTONIC_TIMESTAMP",
})

# Linux capability names by bit number (include/uapi/linux/capability.h), as Filebeat renders them.
_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# Filebeat's split of a command line into arguments (Go RE2 `"(\\"|[^"])*?"|[^\s]+`, \s = [\t\n\f\r ]).
_CMDLINE_ARG = re.compile(r'"(?:\\"|[^"])*?"|[^\t\n\f\r ]+')


def _valid_key(key: bytes) -> bool:
    return 0 < len(key) <= _MAX_KEY and not key[:1].isdigit() and not key.translate(None, _KEY_CHARS)


def _timestamp_from_us(text: str) -> str | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    try:
        moment = _EPOCH + dt.timedelta(microseconds=int(text))
    except OverflowError:
        return None
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}Z")


def _integer(text: str) -> int | str:
    """Filebeat's conversion: an int64, else the part before a comma as one, else the text unchanged."""
    for candidate in (text, text.partition(",")[0]):
        body = candidate[1:] if candidate[:1] in ("-", "+") else candidate
        if body.isascii() and body.isdigit() and len(body) <= 19:
            value = int(candidate)
            if -(1 << 63) <= value < (1 << 63):
                return value
    return text


def _put(event: Event, path: tuple[str, ...], value: Any) -> None:
    node = event
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _get(event: Event, path: tuple[str, ...]) -> Any:
    node: Any = event
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _capabilities(hex_text: str) -> list[str]:
    if len(hex_text) > 32:
        return []
    try:
        bits = int(hex_text, 16)
    except ValueError:
        return []
    if bits < 0:
        return []
    names: list[str] = []
    number = 0
    while bits:
        if bits & 1:
            names.append(_CAPABILITIES[number] if number < len(_CAPABILITIES) else str(number))
        bits >>= 1
        number += 1
    return names


def _id_text(value: Any) -> str | None:
    return str(value) if isinstance(value, int | str) else None


def _enrich(event: Event) -> None:
    """Filebeat's ECS enrichment: user.* and process.* from journald.* (then journald.object.*, which wins).

    Where Filebeat would write 0 for a value that is not an integer, the value's text is kept instead.
    """
    for prefix in (("journald",), ("journald", "object")):
        login = _id_text(_get(event, (*prefix, "audit", "login_uid")))
        if login is not None:
            _put(event, ("user", "id"), login)
        uid = _id_text(_get(event, (*prefix, "uid")))
        if uid is not None:
            gid = _id_text(_get(event, (*prefix, "gid")))
            user = ("user", "effective") if login is not None and login != uid else ("user",)
            if uid:
                _put(event, (*user, "id"), uid)
            if gid:
                _put(event, (*user, "group", "id"), gid)
    for prefix in (("journald",), ("journald", "object")):
        pid = _get(event, (*prefix, "pid"))
        if isinstance(pid, int):
            _put(event, ("process", "pid"), pid)
        for source, target in (("name", "name"), ("executable", "executable")):
            value = _get(event, (*prefix, "process", source))
            if isinstance(value, str) and value:
                _put(event, ("process", target), value)
        cmdline = _get(event, (*prefix, "process", "command_line"))
        if isinstance(cmdline, str) and cmdline:
            _put(event, ("process", "command_line"), cmdline)
            args = _CMDLINE_ARG.findall(cmdline)
            if args:
                _put(event, ("process", "args"), args)
                _put(event, ("process", "args_count"), len(args))
    caps = _get(event, ("journald", "process", "capabilities"))
    if isinstance(caps, str):
        names = _capabilities(caps)
        if names:
            _put(event, ("process", "thread", "capabilities", "effective"), names)


def _decode(value: bytes) -> tuple[str, bool]:
    try:
        return value.decode("utf-8"), True
    except UnicodeDecodeError:
        return value.decode("utf-8", "replace"), False


class _Entry:
    """The fields read so far of one entry (export form)."""

    __slots__ = ("fields", "malformed", "binary_key", "binary_index", "binary_buffer")

    def __init__(self) -> None:
        self.fields: list[tuple[str, bytes]] = []
        self.malformed = 0
        self.binary_key: str | None = None  # a binary field is being read
        self.binary_index = 0  # index (in the held lines) of its KEY line
        self.binary_buffer = bytearray()

    @property
    def started(self) -> bool:
        return bool(self.fields) or self.malformed > 0 or self.binary_key is not None


class JournaldAssembler:
    """The journal export/json stream, entry by entry (see the module docstring)."""

    def __init__(self, ctx: SourceContext, options: NormalizeOptions) -> None:
        self._ctx = ctx
        self._lines: list[HeldLine] = []
        self._size = 0
        self._entry = _Entry()
        self._counters: dict[str, int] = {}

    # -- the Assembler interface ------------------------------------------------------------------

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        out: list[Event] = []
        try:
            self._take(HeldLine(line, offset, received), received, out)
        except Exception as exc:  # the invariant: never raise, never lose a line
            out.extend(self._emit_all(received, f"journald: internal error: {type(exc).__name__}: {str(exc)[:80]}"))
        return out

    def flush(self, received: str, force: bool = False) -> list[Event]:
        if not force or not self._lines:
            return []
        self._count("cut_off")
        return self._emit_all(received, "journald: entry cut off: the stream ended before its terminating empty line")

    def held(self) -> list[HeldLine]:
        return list(self._lines)

    def counters(self) -> dict[str, int]:
        return self._counters

    # -- reading ----------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def _take(self, held: HeldLine, received: str, out: list[Event]) -> None:
        self._lines.append(held)
        self._size += len(held.line) + 1
        entry = self._entry
        line = held.line
        if entry.binary_key is not None:
            self._binary_part(line, received, out)
        elif line == b"" or line == b"\r":
            if entry.started:
                out.append(self._complete(received, crlf=line == b"\r"))
            # else: an empty line before an entry; it belongs to the next one
        elif not entry.started and line[:1] == b"{":
            out.append(self._json_entry(received))
        else:
            self._field_line(line, received, out)
        if self._size > MAX_ENTRY_BYTES and self._lines:
            self._count("oversized")
            out.extend(self._emit_all(
                received, f"journald: entry longer than {MAX_ENTRY_BYTES} bytes without its terminating empty line"))

    def _field_line(self, line: bytes, received: str, out: list[Event]) -> None:
        entry = self._entry
        eq = line.find(b"=")
        if eq > 0 and _valid_key(line[:eq]):
            entry.fields.append((line[:eq].decode("ascii"), line[eq + 1:]))
            return
        key = line[:-1] if line[-1:] == b"\r" else line
        if eq < 0 and _valid_key(key):
            entry.binary_key = key.decode("ascii")
            entry.binary_index = len(self._lines) - 1
            entry.binary_buffer = bytearray()
            return
        if entry.started:
            entry.malformed += 1
            return
        # Not the start of an entry: an event of its own (with any empty lines before it).
        lines = self._lines
        self._reset()
        raw = b"\n".join(held.line for held in lines)
        out.append(unparsed_event(line=raw, offset=lines[0].offset, ctx=self._ctx, received=received,
                                  dataset=DATASET, error="journald: not a journal export field or JSON entry"))

    def _binary_part(self, line: bytes, received: str, out: list[Event]) -> None:
        entry = self._entry
        buffer = entry.binary_buffer
        if len(self._lines) - 1 > entry.binary_index + 1:
            buffer += b"\n"
        buffer += line
        if len(buffer) < 8:
            return
        length = int.from_bytes(buffer[:8], "little")
        end = 8 + length
        if length <= MAX_ENTRY_BYTES and len(buffer) < end:
            return
        if length <= MAX_ENTRY_BYTES and (len(buffer) == end or (len(buffer) == end + 1 and buffer[-1:] == b"\r")):
            assert entry.binary_key is not None
            entry.fields.append((entry.binary_key, bytes(buffer[8:end])))
            entry.binary_key = None
            entry.binary_buffer = bytearray()
            return
        # Not a binary field after all: the KEY line is malformed; read the lines after it again.
        self._count("bad_binary_field")
        again = self._lines[entry.binary_index + 1:]
        del self._lines[entry.binary_index + 1:]
        self._size = sum(len(held.line) + 1 for held in self._lines)
        entry.binary_key = None
        entry.binary_buffer = bytearray()
        entry.malformed += 1
        for held in again:
            self._take(held, received, out)

    def _reset(self) -> None:
        self._lines = []
        self._size = 0
        self._entry = _Entry()

    # -- events -----------------------------------------------------------------------------------

    def _emit_all(self, received: str, error: str) -> list[Event]:
        """Everything held as one event (an entry cut off, too long, or after an internal error)."""
        if not self._lines:
            self._reset()
            return []
        entry = self._entry
        if not entry.started:
            lines = self._lines
            self._reset()
            raw = b"\n".join(held.line for held in lines)
            return [unparsed_event(line=raw, offset=lines[0].offset, ctx=self._ctx, received=received,
                                   dataset=DATASET, error="journald: empty lines outside any entry")]
        if entry.binary_key is not None:
            entry.fields.append((entry.binary_key, bytes(entry.binary_buffer[8:])))
            error += f"; binary field {entry.binary_key} incomplete"
        return [self._complete(received, crlf=False, error=error)]

    def _complete(self, received: str, *, crlf: bool, error: str | None = None) -> Event:
        lines = self._lines
        entry = self._entry
        self._reset()
        fields = entry.fields
        if crlf:
            fields = [(key, value[:-1] if value[-1:] == b"\r" else value) for key, value in fields]
        errors = [error] if error else []
        if entry.malformed:
            errors.append(f"journald: {entry.malformed} malformed line(s) in the entry")
        return self._event(lines, fields, received, errors)

    def _json_entry(self, received: str) -> Event:
        lines = self._lines
        self._reset()
        line = lines[-1].line
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            parsed = None
            reason = f"journald: bad JSON entry: {str(exc)[:80]}"
        else:
            reason = "journald: JSON entry is not an object"
        raw = b"\n".join(held.line for held in lines)
        if not isinstance(parsed, dict):
            return unparsed_event(line=raw, offset=lines[0].offset, ctx=self._ctx, received=received,
                                  dataset=DATASET, error=reason)
        fields: list[tuple[str, bytes]] = []
        bad = 0
        for key, value in parsed.items():
            values = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
            for item in values:
                if item is None:
                    continue  # journalctl leaves out values over its size limit
                if isinstance(item, str):
                    fields.append((key, item.encode("utf-8", "surrogatepass")))
                elif isinstance(item, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in item):
                    fields.append((key, bytes(item)))
                else:
                    bad += 1
        errors = [f"journald: {bad} JSON value(s) neither a string nor bytes"] if bad else []
        return self._event(lines, fields, received, errors)

    def _event(self, lines: list[HeldLine], fields: list[tuple[str, bytes]], received: str,
               errors: list[str]) -> Event:
        raw = b"\n".join(held.line for held in lines)
        values: dict[str, list[bytes]] = {}
        for key, value in fields:
            values.setdefault(key, []).append(value)
        timestamp = None
        realtime = values.get("__REALTIME_TIMESTAMP")
        if realtime:
            timestamp = _timestamp_from_us(realtime[0].decode("ascii", "replace"))
        if timestamp is None:
            errors.append("journald: no usable __REALTIME_TIMESTAMP: @timestamp is the time of reception")
            timestamp = received
        event = base_event(line=raw, offset=lines[0].offset, ctx=self._ctx, timestamp=timestamp, dataset=DATASET,
                           action="log", outcome=OUTCOME_UNKNOWN, category=[], types=["info"])
        lossy = False
        custom: dict[str, Any] = {}
        for key, raw_values in values.items():
            if key in _DROPPED:
                continue
            texts: list[str] = []
            for value in raw_values:
                text, exact = _decode(value)
                lossy = lossy or not exact
                texts.append(text)
            conversion = _CONVERSIONS.get(key)
            if conversion is None:
                custom[key.lstrip("_").lower()] = texts[0] if len(texts) == 1 else texts
                continue
            destinations, is_integer = conversion
            converted: list[Any] = [_integer(text) for text in texts] if is_integer else list(texts)
            result: Any = converted[0] if len(converted) == 1 else converted
            for path in destinations:
                _put(event, path, result)
        if custom:
            _put(event, ("journald", "custom"), custom)
        _enrich(event)
        if lossy:
            errors.append("journald: " + NOT_UTF8)
        if errors:
            event["error"] = {"message": "; ".join(errors)}
        return event


def make_assembler(ctx: SourceContext, options: NormalizeOptions) -> JournaldAssembler:
    return JournaldAssembler(ctx, options)
