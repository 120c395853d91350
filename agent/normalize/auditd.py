"""Linux auditd log (`/var/log/audit/audit.log`): one record per line.

    [node=NAME ]type=TYPE msg=audit(EPOCH.MILLIS:SERIAL): key=value key="quoted" msg='op=... res=...'

(the colon after the `)` is optional: some daemon records leave it out).

Mapping (dataset `auditd.log`, field names as in Elastic's auditd module):

* `@timestamp` from the epoch in `msg=audit(...)`, exact to the digits given (no float rounding).
* `event.action` = record type lowercased (`syscall`, `user_login`, ...); `event.category`/`type`
  from a small table of common record types (authentication, session, iam, process, configuration),
  else [] / ["info"].
* `auditd.log.record_type` (as logged), `auditd.log.sequence` (int), `auditd.log.node` (with the
  `node=` prefix), and every key=value pair under `auditd.log`, values as strings with their quotes
  removed. The pairs inside a user-space record's `msg='...'` are flattened into `auditd.log` too
  (without overwriting an outer key of the same name); a `msg='...'` with no pairs is kept as
  `auditd.log.msg`. Hex-encoded values stay hex-encoded here. In the old LOGIN format
  (`old auid=1 new auid=2 old ses=3 new ses=4`) the keys become `old_auid`, `new_auid`, ...
* `event.outcome` from `res=` (success/yes/1 -> success, failed/no/0 -> failure), else from
  `success=` (yes/no), else unknown.
* `process.pid` (pid=), `process.parent.pid` (ppid=), `user.id` (uid=), `process.name` (comm=),
  `process.executable` (exe=), `user.name` (acct=), `source.ip` (addr=, when it is an address).
  For comm/exe/acct a hex-encoded value is decoded here, since ECS fields hold plain text.

A line without `type=... msg=audit(EPOCH:SERIAL):` (e.g. `type=UNKNOWN[1329] msg=?`) becomes an
`unparsed_event`. Bytes that are not UTF-8 are parsed with U+FFFD replacements (exact bytes kept in
`logseal.original_base64` by `base_event`, and `error.message` says so). The normalizer never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.normalize.common import (
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    OUTCOME_UNKNOWN,
    Event,
    SourceContext,
    base_event,
    timestamp_from_epoch,
    unparsed_event,
)
from agent.normalize.k8s_audit import NOT_UTF8, looks_like_ip

DATASET = "auditd.log"

_OUTCOME_BY_RES = {
    "success": OUTCOME_SUCCESS,
    "yes": OUTCOME_SUCCESS,
    "1": OUTCOME_SUCCESS,
    "failed": OUTCOME_FAILURE,
    "failure": OUTCOME_FAILURE,
    "fail": OUTCOME_FAILURE,
    "no": OUTCOME_FAILURE,
    "0": OUTCOME_FAILURE,
}
_OUTCOME_BY_SUCCESS = {"yes": OUTCOME_SUCCESS, "no": OUTCOME_FAILURE}

_AUTH_INFO = (("authentication",), ("info",))
_CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "USER_AUTH": _AUTH_INFO,
    "USER_ACCT": _AUTH_INFO,
    "USER_ERR": _AUTH_INFO,
    "CRED_ACQ": _AUTH_INFO,
    "CRED_DISP": _AUTH_INFO,
    "CRED_REFR": _AUTH_INFO,
    "USER_LOGIN": (("authentication",), ("start",)),
    "USER_LOGOUT": (("authentication",), ("end",)),
    "LOGIN": (("authentication",), ("info",)),
    "USER_START": (("session",), ("start",)),
    "USER_END": (("session",), ("end",)),
    "ADD_USER": (("iam",), ("user", "creation")),
    "DEL_USER": (("iam",), ("user", "deletion")),
    "USER_MGMT": (("iam",), ("user", "change")),
    "USER_CHAUTHTOK": (("iam",), ("user", "change")),
    "ADD_GROUP": (("iam",), ("group", "creation")),
    "DEL_GROUP": (("iam",), ("group", "deletion")),
    "GRP_MGMT": (("iam",), ("group", "change")),
    "USER_ROLE_CHANGE": (("iam",), ("change",)),
    "SYSCALL": (("process",), ("info",)),
    "EXECVE": (("process",), ("start",)),
    "USER_CMD": (("process",), ("start",)),
    "SERVICE_START": (("process",), ("start",)),
    "SERVICE_STOP": (("process",), ("end",)),
    "CONFIG_CHANGE": (("configuration",), ("change",)),
    "DAEMON_CONFIG": (("configuration",), ("change",)),
    "USYS_CONFIG": (("configuration",), ("change",)),
    "NETFILTER_CFG": (("configuration",), ("change",)),
}
_UNCATEGORIZED: tuple[tuple[str, ...], tuple[str, ...]] = ((), ("info",))

# Beyond this many digits an epoch is not a time a log can carry (year > 9999 is out already).
_MAX_EPOCH_DIGITS = 12


def _parse_pairs(text: str, out: dict[str, Any], overwrite: bool) -> None:
    """Add the `key=value` pairs of `text` to `out`; bare words (`avc:`, `{ read }`) are skipped.

    Values are unquoted. A quoted value may hold spaces (USER_AVC's `cmdline="a b"`): tokens are
    joined back until the closing quote.
    """
    tokens = iter(text.split(" "))
    previous = ""
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            if token:
                previous = token
            continue
        quote = value[:1]
        if quote == '"' or quote == "'":
            if len(value) > 1 and value[-1] == quote:
                value = value[1:-1]
            else:
                parts = [value]
                for more in tokens:
                    parts.append(more)
                    if more.endswith(quote):
                        break
                value = " ".join(parts)
                value = value[1:-1] if len(value) > 1 and value[-1] == quote else value[1:]
        if previous:
            if previous == "old" or previous == "new":
                key = previous + "_" + key
            previous = ""
        if overwrite or key not in out:
            out[key] = value


def _plain_text(fields: dict[str, Any], key: str, rest: str) -> str | None:
    """The text of `key`: as is when it was quoted, hex-decoded when auditd hex-encoded it.

    An unquoted value that is not hex is plain text from an old record format (`acct=root :`).
    """
    value = fields.get(key)
    if type(value) is not str or not value or value == "?" or value == "(null)":
        return None
    if f'{key}="' in rest or len(value) % 2:
        return value
    try:
        return bytes.fromhex(value).decode("utf-8", "replace")
    except ValueError:
        return value


def _int(value: object) -> int | None:
    if type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        return int(value)
    return None


def make_normalizer(ctx: SourceContext) -> Callable[[bytes, int, str], Event]:
    # Records of one auditd event share their second: remember the last second's canonical prefix.
    last_second = ""
    last_prefix = ""

    def unparsed(line: bytes, offset: int, received: str, error: str) -> Event:
        return unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET,
                              error=error)

    def normalize(line: bytes, offset: int, received: str) -> Event:
        nonlocal last_second, last_prefix
        try:
            text = line.decode("utf-8", "replace")
            node = None
            start = 0
            if text.startswith("node="):
                start = text.find(" ") + 1
                if start == 0:
                    return unparsed(line, offset, received, "auditd: nothing after 'node='")
                node = text[5:start - 1]
            if not text.startswith("type=", start):
                return unparsed(line, offset, received, "auditd: not an audit record: no 'type='")
            type_end = text.find(" ", start + 5)
            record_type = text[start + 5:type_end] if type_end > 0 else ""
            if not record_type or not text.startswith("msg=audit(", type_end + 1):
                return unparsed(line, offset, received,
                                "auditd: not an audit record: no 'type=TYPE msg=audit(' header")
            stamp_start = type_end + 11
            stamp_end = text.find(")", stamp_start)
            if stamp_end < 0:
                return unparsed(line, offset, received, "auditd: unterminated 'msg=audit(' header")
            epoch, _, serial = text[stamp_start:stamp_end].partition(":")
            seconds, _, fraction = epoch.partition(".")
            sequence = _int(serial)
            if (
                sequence is None
                or not seconds.isascii() or not seconds.isdigit() or len(seconds) > _MAX_EPOCH_DIGITS
                or (fraction and not (fraction.isascii() and fraction.isdigit()))
            ):
                stamp = text[stamp_start:stamp_end][:40]
                return unparsed(line, offset, received,
                                f"auditd: bad 'msg=audit(EPOCH:SERIAL)' value {stamp!r}")
            if seconds != last_second:
                try:
                    whole = timestamp_from_epoch(int(seconds))
                except (ValueError, OverflowError, OSError):
                    whole = ""
                if len(whole) != 27:
                    return unparsed(line, offset, received, f"auditd: epoch {seconds} is out of range")
                last_second, last_prefix = seconds, whole[:20]
            timestamp = last_prefix + (fraction + "000000")[:6] + "Z"

            # `):` as a rule; some daemon records (DAEMON_CONFIG on RHEL 7) leave out the colon.
            rest = text[stamp_end + 2:] if text[stamp_end + 1:stamp_end + 2] == ":" else text[stamp_end + 1:]
            fields: dict[str, Any] = {"record_type": record_type, "sequence": sequence}
            inner_start = rest.find("msg='")
            if inner_start >= 0 and (inner_start == 0 or rest[inner_start - 1] == " "):
                inner_end = rest.rfind("'")
                if inner_end <= inner_start + 4:
                    inner_end = len(rest)
                _parse_pairs(rest[:inner_start] + rest[inner_end + 1:], fields, overwrite=True)
                inner = rest[inner_start + 5:inner_end]
                if inner.endswith(")") and " (" in inner:
                    # Old PAM format: `exe="/usr/sbin/crond" (hostname=?, addr=?, terminal=cron res=success)`
                    inner = inner[:-1].replace(" (", " ", 1).replace(", ", " ")
                size = len(fields)
                _parse_pairs(inner, fields, overwrite=False)
                if len(fields) == size:
                    fields["msg"] = inner
            else:
                _parse_pairs(rest, fields, overwrite=True)
            fields["record_type"] = record_type
            fields["sequence"] = sequence
            if node is not None:
                fields["node"] = node

            res = fields.get("res")
            if res is not None:
                outcome = _OUTCOME_BY_RES.get(res.lower(), OUTCOME_UNKNOWN)
            else:
                success = fields.get("success")
                outcome = OUTCOME_UNKNOWN if success is None else _OUTCOME_BY_SUCCESS.get(
                    success.lower(), OUTCOME_UNKNOWN)
            category, types = _CATEGORIZATION.get(record_type, _UNCATEGORIZED)

            event = base_event(
                line=line, offset=offset, ctx=ctx, timestamp=timestamp, dataset=DATASET,
                action=record_type.lower(), outcome=outcome, category=list(category), types=list(types),
            )
            process: dict[str, Any] = {}
            pid = _int(fields.get("pid"))
            if pid is not None:
                process["pid"] = pid
            ppid = _int(fields.get("ppid"))
            if ppid is not None:
                process["parent"] = {"pid": ppid}
            if "comm" in fields:
                name = _plain_text(fields, "comm", rest)
                if name is not None:
                    process["name"] = name
            if "exe" in fields:
                executable = _plain_text(fields, "exe", rest)
                if executable is not None:
                    process["executable"] = executable
            if process:
                event["process"] = process
            user: dict[str, Any] = {}
            uid = fields.get("uid")
            if uid:
                user["id"] = uid
            if "acct" in fields:
                account = _plain_text(fields, "acct", rest)
                if account is not None:
                    user["name"] = account
            if user:
                event["user"] = user
            addr = fields.get("addr")
            if addr and looks_like_ip(addr):
                event["source"] = {"ip": addr}
            event["auditd"] = {"log": fields}
            if "logseal" in event:
                event["error"] = {"message": "auditd: " + NOT_UTF8}
            return event
        except Exception as exc:  # the invariant: an event for every line, whatever it holds
            error = f"auditd: internal error: {type(exc).__name__}: {str(exc)[:80]}"
            return unparsed(line, offset, received, error)

    return normalize
