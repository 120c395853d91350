"""Syslog files (`/var/log/auth.log`, `/var/log/secure`, `/var/log/syslog`, `/var/log/messages`).

Accepted line shapes:

* RFC 3164 / BSD: `[<PRI>]Mmm dd hh:mm:ss HOST TAG[PID]: MESSAGE` (day space- or zero-padded,
  optional `.ffffff` after the seconds; HOST may be missing, as in lines written by a local daemon).
* the same with an RFC 3339 timestamp instead (rsyslog's high-precision file format, the default of
  recent Debian/Ubuntu): `2024-03-01T12:00:00.123456+01:00 HOST TAG[PID]: MESSAGE`.
* RFC 5424: `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]` (`-` = nil).

Timestamps: an RFC 3164 timestamp has neither year nor zone. The zone is taken to be UTC (the node
clock is expected to run in UTC, as on Kubernetes nodes; a node logging local time gets shifted
times). The year is the year of `received`, or the year before when that would put the line more
than one day after `received` (a December line read in January). An impossible date (Feb 30, or
Feb 29 in neither year) makes the line unparsed. A nil (`-`) RFC 5424 timestamp takes `received`.

Fields: `message`, `process.name` (TAG or APP-NAME), `process.pid` (int, when numeric),
`log.syslog.hostname` (the host named in the line: `host.name` stays the node from the context),
`log.syslog.priority` / `facility.code` / `severity.code` when a PRI is present, and for RFC 5424
`log.syslog.version`, `appname`, `procid`, `msgid`, `structured_data` ({SD-ID: {PARAM: value}}).

Dataset: `system.auth` when the file is an auth log (basename `auth.log`/`secure`, or a rotation of
one) or the program is an authentication program (sshd, sudo, su, login, systemd-logind, passwd,
user/group tools); otherwise `system.syslog`. For `system.auth` a few message shapes get an
`event.action` and fields (as Elastic's system module does):

* sshd `Accepted|Failed <method> for [invalid user ]U from IP port P` and `Invalid user U from IP`:
  `ssh_login`, outcome success/failure, `user.name`, `source.ip`, `source.port`,
  `system.auth.ssh.event`/`method`;
* sudo: `sudo`, `user.name`, `user.effective.name`, `system.auth.sudo.{tty,pwd,user,command}`,
  outcome failure on "incorrect password", "command not allowed", "NOT in sudoers",
  "authentication failure", success when a command ran or a session opened;
* su: `su` (failure on "FAILED SU" / "authentication failure");
* systemd-logind `New session N of user U.` / `Removed session N.`: `session_start`/`session_end`;
* useradd `new user: name=U`, useradd/groupadd `new group: name=G`, passwd `password changed for U`:
  `user_created`, `group_created`, `password_changed`.

Everything else gets `event.action` "log". A line that matches none of the shapes becomes an
`unparsed_event` with dataset `system.syslog` (whatever the file). Bytes that are not UTF-8 are
parsed with U+FFFD replacements; `error.message` says so and `logseal.original_base64` keeps the
exact bytes. The normalizer never raises.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent.normalize.common import (
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    OUTCOME_UNKNOWN,
    Event,
    SourceContext,
    base_event,
    format_timestamp,
    unparsed_event,
)
from agent.normalize.k8s_audit import NOT_UTF8, looks_like_ip, rfc3339_timestamp

DATASET_AUTH = "system.auth"
DATASET_SYSLOG = "system.syslog"

AUTH_PROGRAMS = frozenset({
    "sshd", "sshd-session", "sudo", "su", "login", "systemd-logind", "passwd", "chpasswd", "chage",
    "useradd", "userdel", "usermod", "groupadd", "groupdel", "groupmod", "gpasswd",
})
_AUTH_FILES = ("auth.log", "secure")

_MONTHS = {
    "Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
    "Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}
_MAX_TAG = 128
_ONE_DAY = dt.timedelta(days=1)

_SUDO_FAILURES = ("incorrect password", "command not allowed", "NOT in sudoers", "authentication failure")


class _Malformed(Exception):
    """A line that is not syslog; the message becomes `error.message`."""


def is_auth_file(path: str) -> bool:
    base = path.rpartition("/")[2]
    return base in _AUTH_FILES or base.startswith(("auth.log.", "secure-", "secure."))


def _pri(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 3 or int(value) > 191:
        raise _Malformed(f"syslog: bad PRI <{value[:8]}>")
    return int(value)


def _split_tag(tag: str) -> tuple[str, int | None, str | None]:
    """`prog[123]` -> ("prog", 123, "123"); `prog` -> ("prog", None, None)."""
    if tag.endswith("]"):
        bracket = tag.find("[")
        if bracket > 0:
            procid = tag[bracket + 1:-1]
            pid = int(procid) if procid.isascii() and procid.isdigit() and len(procid) <= 19 else None
            return tag[:bracket], pid, procid
    return tag, None, None


def _unescape_param(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and value[i + 1:i + 2] in ('"', "\\", "]"):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """Parse RFC 5424 SD-ELEMENTs at the start of `text`; return them and the rest (the MSG)."""
    elements: dict[str, dict[str, str]] = {}
    i = 0
    end = len(text)
    while text[i:i + 1] == "[":
        id_end = i + 1
        while id_end < end and text[id_end] not in " ]":
            id_end += 1
        sd_id = text[i + 1:id_end]
        if not sd_id or id_end == end:
            raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA")
        params: dict[str, str] = {}
        i = id_end
        while text[i:i + 1] == " ":
            eq = text.find("=", i + 1)
            if eq < 0 or text[eq + 1:eq + 2] != '"':
                raise _Malformed("syslog: bad RFC 5424 SD-PARAM")
            name = text[i + 1:eq]
            close = eq + 2
            while True:
                close = text.find('"', close)
                if close < 0:
                    raise _Malformed("syslog: unterminated RFC 5424 SD-PARAM value")
                backslashes = 0
                while text[close - 1 - backslashes] == "\\":
                    backslashes += 1
                if backslashes % 2 == 0:
                    break
                close += 1
            params[name] = _unescape_param(text[eq + 2:close])
            i = close + 1
        if text[i:i + 1] != "]":
            raise _Malformed("syslog: bad RFC 5424 SD-ELEMENT")
        i += 1
        elements.setdefault(sd_id, params)
    if i < end and text[i] != " ":
        raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA")
    return elements, text[i + 1:]


def _ssh_login(event: Event, message: str, rest: str) -> None:
    """`[invalid user ]USER from IP port PORT ...` after "for " / "Invalid user "."""
    if rest.startswith("invalid user "):
        rest = rest[13:]
    source = rest.rfind(" from ")
    if source < 0:
        return
    event["user"] = {"name": rest[:source]}
    address, _, tail = rest[source + 6:].partition(" ")
    if looks_like_ip(address):
        endpoint: dict[str, Any] = {"ip": address}
        if tail.startswith("port "):
            port = tail[5:].partition(" ")[0]
            if port.isascii() and port.isdigit() and len(port) <= 5:
                endpoint["port"] = int(port)
        event["source"] = endpoint


def _classify_auth(event: Event, program: str, message: str) -> None:
    """Set event.action/outcome/category/type and fields for the auth messages we recognize."""
    fields = event["event"]
    if program == "sshd" or program == "sshd-session":
        if message.startswith(("Accepted ", "Failed ")):
            accepted = message[0] == "A"
            method, _, rest = message.partition(" ")[2].partition(" ")
            if not rest.startswith("for "):
                return
            fields["action"] = "ssh_login"
            fields["outcome"] = OUTCOME_SUCCESS if accepted else OUTCOME_FAILURE
            fields["category"] = ["authentication"]
            fields["type"] = ["start"] if accepted else ["info"]
            event["system"] = {"auth": {"ssh": {"event": "Accepted" if accepted else "Failed",
                                                "method": method}}}
            _ssh_login(event, message, rest[4:])
        elif message.startswith("Invalid user "):
            fields["action"] = "ssh_login"
            fields["outcome"] = OUTCOME_FAILURE
            fields["category"] = ["authentication"]
            fields["type"] = ["info"]
            event["system"] = {"auth": {"ssh": {"event": "Invalid"}}}
            _ssh_login(event, message, message[13:])
    elif program == "sudo":
        fields["action"] = "sudo"
        fields["category"] = ["process"]
        if any(marker in message for marker in _SUDO_FAILURES):
            fields["outcome"] = OUTCOME_FAILURE
        elif "COMMAND=" in message or "session opened" in message:
            fields["outcome"] = OUTCOME_SUCCESS
        if " ; " in message and " : " in message:
            who, _, details = message.partition(" : ")
            sudo: dict[str, str] = {}
            for part in details.split(" ; "):
                key, sep, value = part.partition("=")
                if sep and key in ("TTY", "PWD", "USER", "COMMAND"):
                    sudo[key.lower()] = value
            user: dict[str, Any] = {"name": who.strip()}
            if "user" in sudo:
                user["effective"] = {"name": sudo["user"]}
            event["user"] = user
            event["system"] = {"auth": {"sudo": sudo}}
            if "command" in sudo:
                fields["type"] = ["start"]
    elif program == "su":
        fields["action"] = "su"
        fields["category"] = ["authentication"]
        if "FAILED SU" in message or "authentication failure" in message:
            fields["outcome"] = OUTCOME_FAILURE
        elif message.startswith(("(to ", "Successful su")) or "session opened" in message:
            fields["outcome"] = OUTCOME_SUCCESS
    elif program == "systemd-logind":
        if message.startswith("New session "):
            fields["action"] = "session_start"
            fields["outcome"] = OUTCOME_SUCCESS
            fields["category"] = ["session"]
            fields["type"] = ["start"]
            marker = message.find(" of user ")
            if marker > 0:
                event["user"] = {"name": message[marker + 9:].rstrip(".")}
        elif message.startswith("Removed session "):
            fields["action"] = "session_end"
            fields["outcome"] = OUTCOME_SUCCESS
            fields["category"] = ["session"]
            fields["type"] = ["end"]
    elif program == "useradd" and message.startswith("new user: name="):
        fields["action"] = "user_created"
        fields["outcome"] = OUTCOME_SUCCESS
        fields["category"] = ["iam"]
        fields["type"] = ["user", "creation"]
        event["user"] = {"name": message[15:].partition(",")[0]}
    elif (program == "groupadd" or program == "useradd") and message.startswith("new group: name="):
        fields["action"] = "group_created"
        fields["outcome"] = OUTCOME_SUCCESS
        fields["category"] = ["iam"]
        fields["type"] = ["group", "creation"]
        event["group"] = {"name": message[16:].partition(",")[0]}
    elif program == "passwd" and "password changed for " in message:
        fields["action"] = "password_changed"
        fields["outcome"] = OUTCOME_SUCCESS
        fields["category"] = ["iam"]
        fields["type"] = ["user", "change"]
        event["user"] = {"name": message.partition("password changed for ")[2].strip()}


def make_normalizer(ctx: SourceContext) -> Callable[[bytes, int, str], Event]:
    auth_file = is_auth_file(ctx.path)
    # The reference for year-less timestamps, recomputed only when `received` changes (a batch
    # shares it): the received time, its year, and received + 1 day in canonical form.
    ref_received = ""
    ref_year = 0
    ref_limit = ""

    def year_less(month: int, day: int, clock: str, received: str) -> str:
        """Canonical time of an RFC 3164 `Mmm dd hh:mm:ss[.ffffff]` (UTC, year inferred)."""
        nonlocal ref_received, ref_year, ref_limit
        if ref_received != received:
            moment = dt.datetime.fromisoformat(received)
            ref_received, ref_year, ref_limit = received, moment.year, format_timestamp(moment + _ONE_DAY)
        seconds, _, fraction = clock.partition(".")
        if (
            len(seconds) != 8 or seconds[2] != ":" or seconds[5] != ":"
            or not (seconds.isascii() and seconds[:2].isdigit() and seconds[3:5].isdigit()
                    and seconds[6:].isdigit())
            or (fraction and not (fraction.isascii() and fraction.isdigit()))
        ):
            raise _Malformed(f"syslog: bad time {clock[:20]!r}")
        hour, minute, second = int(seconds[:2]), int(seconds[3:5]), int(seconds[6:])
        tail = f"-{month:02d}-{day:02d}T{seconds}.{(fraction + '000000')[:6]}Z"
        for candidate_year in (ref_year, ref_year - 1):
            try:
                dt.datetime(candidate_year, month, day, hour, minute, second)
            except ValueError:
                continue
            candidate = f"{candidate_year:04d}{tail}"
            if candidate_year < ref_year or candidate <= ref_limit:
                return candidate
        raise _Malformed(f"syslog: impossible date {month:02d}-{day:02d} {seconds}")

    def parse(line: bytes, offset: int, received: str) -> Event:
        text = line.decode("utf-8", "replace")
        priority: int | None = None
        rest = text
        if text[:1] == "<":
            close = text.find(">", 1, 6)
            if close < 0:
                raise _Malformed("syslog: unterminated PRI")
            priority = _pri(text[1:close])
            rest = text[close + 1:]
        syslog: dict[str, Any] = {}
        if priority is not None:
            syslog["priority"] = priority
            syslog["facility"] = {"code": priority >> 3}
            syslog["severity"] = {"code": priority & 7}

        pid: int | None = None
        if priority is not None and rest[:2] == "1 ":
            # RFC 5424
            parts = rest[2:].split(" ", 5)
            if len(parts) < 6:
                raise _Malformed("syslog: truncated RFC 5424 header")
            stamp, hostname, appname, procid, msgid, tail = parts
            if stamp == "-":
                timestamp = received
            else:
                parsed = rfc3339_timestamp(stamp)
                if parsed is None:
                    raise _Malformed(f"syslog: bad RFC 5424 timestamp {stamp[:40]!r}")
                timestamp = parsed
            syslog["version"] = "1"
            if tail[:1] == "-" and tail[1:2] in ("", " "):
                structured = None
                message = tail[2:]
            elif tail[:1] == "[":
                structured, message = _structured_data(tail)
            else:
                raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA")
            if message.startswith("\ufeff"):
                message = message[1:]
            program = "" if appname == "-" else appname
            if hostname != "-":
                syslog["hostname"] = hostname
            if program:
                syslog["appname"] = program
            if procid != "-":
                syslog["procid"] = procid
                if procid.isascii() and procid.isdigit() and len(procid) <= 19:
                    pid = int(procid)
            if msgid != "-":
                syslog["msgid"] = msgid
            if structured:
                syslog["structured_data"] = structured
        else:
            # RFC 3164, or the same with an RFC 3339 timestamp
            if rest[:1].isdigit():
                stamp, _, rest = rest.partition(" ")
                parsed = rfc3339_timestamp(stamp)
                if parsed is None:
                    raise _Malformed(f"syslog: bad timestamp {stamp[:40]!r}")
                timestamp = parsed
            else:
                month = _MONTHS.get(rest[:3])
                if month is None or rest[3:4] != " ":
                    raise _Malformed("syslog: no RFC 3164 or RFC 5424 header")
                day_text, _, rest = rest[4:].lstrip(" ").partition(" ")
                if not (day_text.isascii() and day_text.isdigit() and len(day_text) <= 2):
                    raise _Malformed(f"syslog: bad day {day_text[:10]!r}")
                clock, _, rest = rest.partition(" ")
                timestamp = year_less(month, int(day_text), clock, received)
            hostname, _, after_host = rest.partition(" ")
            if hostname.endswith(":") or "[" in hostname:
                after_host = rest  # no HOST: the first word is the TAG
            elif hostname:
                syslog["hostname"] = hostname
            colon = after_host.find(": ")
            if colon < 0 and after_host.endswith(":"):
                colon = len(after_host) - 1
            tag = after_host[:colon] if colon > 0 else ""
            if tag and len(tag) <= _MAX_TAG and " " not in tag:
                program, pid, _procid = _split_tag(tag)
                message = after_host[colon + 2:]
            else:
                program = ""
                message = after_host

        dataset = DATASET_AUTH if auth_file or program in AUTH_PROGRAMS else DATASET_SYSLOG
        event = base_event(
            line=line, offset=offset, ctx=ctx, timestamp=timestamp, dataset=dataset, action="log",
            outcome=OUTCOME_UNKNOWN, category=[], types=["info"],
        )
        event["message"] = message
        if program:
            process: dict[str, Any] = {"name": program}
            if pid is not None:
                process["pid"] = pid
            event["process"] = process
        if syslog:
            event["log"]["syslog"] = syslog
        if dataset == DATASET_AUTH and program:
            _classify_auth(event, program, message)
        if "logseal" in event:
            event["error"] = {"message": "syslog: " + NOT_UTF8}
        return event

    def normalize(line: bytes, offset: int, received: str) -> Event:
        try:
            return parse(line, offset, received)
        except _Malformed as exc:
            error = str(exc)
        except Exception as exc:  # the invariant: an event for every line, whatever it holds
            error = f"syslog: internal error: {type(exc).__name__}: {str(exc)[:80]}"
        return unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET_SYSLOG,
                              error=error)

    return normalize
