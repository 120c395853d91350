"""Syslog files (`/var/log/auth.log`, `/var/log/secure`, `/var/log/syslog`, `/var/log/messages`).

Invariant: one event for every line, whatever it holds; the normalizer never raises. A line that is
not syslog becomes an `unparsed_event`; a line whose header is syslog but whose body is broken
becomes a parsed event with `error.message` saying what was wrong.

Line shapes (RFC numbers are sections):

* RFC 3164 / BSD: `[<PRI>]Mmm dd hh:mm:ss HOST TAG[PID]: MESSAGE` (4.1). Day space- or zero-padded,
  optional `.ffffff` after the seconds, optional year (`Mmm dd yyyy hh:mm:ss`, as Cisco writes).
  HOST may be missing (lines written by a local daemon): a first word ending in `:` or holding `[`
  is the TAG. A word with a space before the `:` is not a TAG, so the whole rest is the message
  (5.4, example 3). PRI is optional (files carry none) and is not invented when missing.
  A valid PRI followed by no valid TIMESTAMP is still syslog: the rest is the message, the time is
  `received` and `error.message` says so (4.3.2). Without a PRI such a line is unparsed.
* rsyslog's high-precision file format (RSYSLOG_FileFormat, the default of recent Debian/Ubuntu):
  an RFC 3339 time instead of the BSD one: `2026-11-26T10:00:00.123456+01:00 HOST TAG[PID]: MSG`.
* RFC 5424: `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]` (6). `-` (NILVALUE)
  leaves the field out; a nil TIMESTAMP takes `received`. SD-PARAM values are unescaped (`\\"`,
  `\\\\`, `\\]`; a backslash before anything else stays, 6.3.3); a PARAM-NAME repeated within an
  element gives a list (7.2.2 `origin ip=... ip=...`); a repeated SD-ID keeps the first (6.3.2).
  The UTF-8 BOM before MSG is dropped (6.4). A broken STRUCTURED-DATA block does not lose the
  header: the event keeps it, `message` is everything after MSGID and `error.message` names the
  problem. More than 6 fraction digits (6.2.3.1 calls them invalid; nanosecond emitters exist) are
  accepted and truncated to microseconds.

Time: RFC 3164 timestamps have neither year nor zone. The zone is `NormalizeOptions.syslog_timezone`
(an IANA name, UTC by default); a wall time the zone repeats (DST fall-back) is read as the earlier
instant, one it skips (spring-forward) with the offset in force before the gap (`fold=0`). The year
is the year of `received` (in that zone), or the year before when that would put the line more than one day after
`received` (a December line read in January). An impossible date (Feb 30, or Feb 29 in neither year)
is an error. RFC 3339 times carry their own offset and ignore the option.

Fields: `message` (leading blanks and a trailing CR dropped), `process.name` (TAG or APP-NAME),
`process.pid` (int, when numeric), `log.syslog.hostname` (the host named in the line; `host.name`
stays the node), `log.syslog.priority` / `facility.code` / `severity.code` when a PRI is present,
and for RFC 5424 `log.syslog.version`, `appname`, `procid`, `msgid`, `structured_data`.

Dataset: `system.auth` when the file is an auth log (`auth.log`, `secure`, or a rotation of one), the
program is an authentication or account program, the PRI facility is auth (4) or authpriv (10), or
the message is a PAM module's (`pam_*(`); otherwise `system.syslog`.

Auth semantics (following Elastic's `system.auth` pipeline where it defines a mapping, ECS
otherwise): `event.action`, `event.category`, `event.type`, `event.outcome`, `user.name` (the
actor), `user.target.name` (whom the action is on: the sudo/su target, the account changed),
`user.effective.name` (sudo/su target, as Elastic sets it), `group.*`, `source.ip`/`source.port`
(`source.domain` when sshd logged a host name), `process.command_line` and
`process.working_directory` (sudo COMMAND and PWD), `system.auth.ssh.*`, `system.auth.sudo.*`, and
`related.user`/`related.ip`. The message shapes and their actions are in `_AUTH_HANDLERS` and the
functions it names; everything else gets `event.action` "log" and outcome "unknown".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

from agent.normalize.assemble import Assembler, LineNormalizer, NormalizeOptions, PerLine
from agent.normalize.common import (
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    Event,
    SourceContext,
    base_event,
    format_timestamp,
    unparsed_event,
)

DATASET_AUTH = "system.auth"
DATASET_SYSLOG = "system.syslog"

NOT_UTF8 = "line is not valid UTF-8: parsed with U+FFFD replacements; exact bytes in logseal.original_base64"

AUTH_PROGRAMS = frozenset({
    "sshd", "sshd-session", "sshd-auth", "sudo", "su", "login", "systemd-logind", "passwd", "chpasswd",
    "chage", "useradd", "userdel", "usermod", "groupadd", "groupdel", "groupmod", "gpasswd",
})
_AUTH_FACILITIES = frozenset({4, 10})  # auth, authpriv (RFC 5424 6.2.1, table 1)
_AUTH_FILES = ("auth.log", "secure")
# PAM services under which the session/auth user is the *target* and the requester is the actor.
_SWITCH_USER_SERVICES = frozenset({"su", "su-l", "runuser", "runuser-l", "sudo", "sudo-i"})

_MONTHS = {
    "Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
    "Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}
_MAX_TAG = 128
_ONE_DAY = dt.timedelta(days=1)
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "GMT", "Etc/GMT"})
_OFFSET_CACHE_LIMIT = 4096


class _Malformed(Exception):
    """A line that is not syslog; the message becomes `error.message`."""


def is_auth_file(path: str) -> bool:
    base = path.rpartition("/")[2]
    return base in _AUTH_FILES or base.startswith(("auth.log.", "secure-", "secure."))


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def looks_like_ip(value: str) -> bool:
    """Cheap shape check for an IPv4/IPv6 literal (ECS `source.ip` refuses anything else)."""
    if not 2 <= len(value) <= 45:
        return False
    if ":" in value:
        return not value.strip("0123456789abcdefABCDEF:.")
    return value.count(".") == 3 and _digits(value.replace(".", ""))


def rfc3339_timestamp(value: str) -> str | None:
    """Canonical UTC form of an RFC 3339 date-time (`T` separator, offset or `Z` required), or None."""
    if (
        len(value) < 20 or value[4] != "-" or value[7] != "-" or value[10] != "T" or value[13] != ":"
        or value[16] != ":" or not value.isascii()
    ):
        return None
    zone_at = 19
    if value[19] == ".":
        zone_at = 20
        while zone_at < len(value) and value[zone_at].isdigit():
            zone_at += 1
        if zone_at == 20:
            return None
    zone = value[zone_at:]
    if not (zone in ("Z", "z") or (len(zone) == 6 and zone[0] in "+-" and zone[3] == ":")):
        return None
    # Python reads at most 6 fraction digits exactly; cut longer fractions to microseconds first.
    text = value[:min(zone_at, 26)] + zone if zone_at > 26 else value
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
        result = format_timestamp(moment)
    except (ValueError, OverflowError):
        return None
    return result if len(result) == 27 else None


def _pri(value: str) -> int:
    if not _digits(value) or len(value) > 3 or int(value) > 191:
        raise _Malformed(f"syslog: bad PRI <{value[:8]}>")
    return int(value)


def _split_tag(tag: str) -> tuple[str, int | None]:
    """`prog[123]` -> ("prog", 123); `prog` -> ("prog", None)."""
    if tag.endswith("]"):
        bracket = tag.find("[")
        if bracket > 0:
            procid = tag[bracket + 1:-1]
            return tag[:bracket], int(procid) if _digits(procid) and len(procid) <= 18 else None
    return tag, None


# RFC 5424 STRUCTURED-DATA (section 6.3)

SDParams = dict[str, str | list[str]]


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


def _structured_data(text: str) -> tuple[dict[str, SDParams], str]:
    """Parse the SD-ELEMENTs at the start of `text`; return them and the rest (the MSG)."""
    elements: dict[str, SDParams] = {}
    i = 0
    end = len(text)
    while text[i:i + 1] == "[":
        id_end = i + 1
        while id_end < end and text[id_end] not in ' ]="':
            id_end += 1
        sd_id = text[i + 1:id_end]
        if not sd_id or id_end == end or text[id_end] not in " ]":
            raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA: bad SD-ID")
        params: SDParams = {}
        i = id_end
        while text[i:i + 1] == " ":
            eq = text.find("=", i + 1)
            name = text[i + 1:eq]
            if eq < 0 or text[eq + 1:eq + 2] != '"' or not name or " " in name or "]" in name:
                raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA: bad SD-PARAM")
            close = eq + 2
            while True:
                close = text.find('"', close)
                if close < 0:
                    raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA: unterminated PARAM-VALUE")
                backslashes = 0
                while text[close - 1 - backslashes] == "\\":
                    backslashes += 1
                if backslashes % 2 == 0:
                    break
                close += 1
            value = _unescape_param(text[eq + 2:close])
            previous = params.get(name)
            if previous is None:
                params[name] = value
            elif isinstance(previous, list):
                previous.append(value)
            else:
                params[name] = [previous, value]
            i = close + 1
        if text[i:i + 1] != "]":
            raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA: SD-ELEMENT not closed by ']'")
        i += 1
        elements.setdefault(sd_id, params)
    if i < end and text[i] != " ":
        raise _Malformed("syslog: bad RFC 5424 STRUCTURED-DATA: no space before MSG")
    return elements, text[i + 1:]


# Auth semantics


def _set(event: Event, action: str, outcome: str | None, category: list[str], types: list[str]) -> None:
    fields = event["event"]
    fields["action"] = action
    if outcome is not None:
        fields["outcome"] = outcome
    fields["category"] = category
    fields["type"] = types


def _users(event: Event, name: str | None = None, target: str | None = None, *, effective: bool = False,
           user_id: str | None = None, target_id: str | None = None) -> None:
    """Set `user.name` (actor) and `user.target.name` (acted on); empty names are left out."""
    user: dict[str, Any] = event.setdefault("user", {})
    if name:
        user["name"] = name
        if user_id and _digits(user_id):
            user["id"] = user_id
    if target:
        user["target"] = {"name": target}
        if target_id and _digits(target_id):
            user["target"]["id"] = target_id
        if effective:
            user["effective"] = {"name": target}
    if not user:
        del event["user"]


def _source(event: Event, address: str, port: int | None = None) -> None:
    if not address:
        return
    source: dict[str, Any] = {"ip": address} if looks_like_ip(address) else {"domain": address}
    if port is not None:
        source["port"] = port
    event["source"] = source


def _endpoint(text: str) -> tuple[str, str, int | None, str] | None:
    """`PREFIX ADDRESS port N REST` -> (PREFIX, ADDRESS, N, REST); ADDRESS is the word before `port`.

    An IP-shaped word wins over an earlier match (user names chosen by attackers may hold " port ").
    """
    fallback: tuple[str, str, int | None, str] | None = None
    start = 0
    while True:
        at = text.find(" port ", start)
        if at < 0:
            return fallback
        digits_end = at + 6
        while digits_end < len(text) and text[digits_end].isascii() and text[digits_end].isdigit():
            digits_end += 1
        if at + 6 < digits_end <= at + 11:
            space = text.rfind(" ", 0, at)
            address = text[space + 1:at]
            found = (text[:max(space, 0)], address, int(text[at + 6:digits_end]), text[digits_end:])
            if looks_like_ip(address):
                return found
            if fallback is None and address:
                fallback = found
        start = at + 1


def _strip_user_words(prefix: str) -> tuple[str, bool]:
    """`authenticating user U` / `invalid user U` / `user U` -> (U, invalid)."""
    for words, invalid in (("authenticating user ", False), ("invalid user ", True), ("user ", False)):
        if prefix.startswith(words):
            return prefix[len(words):], invalid
    return prefix, False


def _ssh_from(event: Event, rest: str) -> tuple[str, str] | None:
    """`[invalid user ]U from ADDRESS port P TAIL` -> sets user/source; returns (U, TAIL)."""
    found = _endpoint(rest)
    if found is None or not found[0].endswith(" from") and found[0] != "from":
        return None
    prefix, address, port, tail = found
    name = prefix[:-5] if prefix.endswith(" from") else ""
    if name.startswith("invalid user "):
        name = name[13:]
    _users(event, name)
    _source(event, address, port)
    return name, tail


def _sshd(event: Event, message: str) -> None:
    if message.startswith("message repeated ") and message.endswith("]") and ": [ " in message:
        message = message.partition(": [ ")[2][:-1]  # rsyslog's repeat reduction: classify the line repeated
    if message.startswith(("Accepted ", "Failed ")):
        word, method, rest = (message.split(" ", 2) + ["", ""])[:3]
        if not rest.startswith("for "):
            return
        found = _ssh_from(event, rest[4:])
        if found is None:
            return
        ssh: dict[str, str] = {"event": word, "method": method}
        tail = found[1].strip()
        if tail.startswith("ssh2: "):
            ssh["signature"] = tail[6:]
        event["system"] = {"auth": {"ssh": ssh}}
        if word == "Accepted":
            _set(event, "ssh_login", OUTCOME_SUCCESS, ["authentication", "session"], ["info"])
        else:
            _set(event, "ssh_login", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif message.startswith("Invalid user "):
        if _ssh_from(event, "invalid user " + message[13:]) is None:
            return
        event["system"] = {"auth": {"ssh": {"event": "Invalid"}}}
        _set(event, "ssh_login", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif "maximum authentication attempts exceeded for " in message:
        if _ssh_from(event, message.partition(" exceeded for ")[2]) is not None:
            _set(event, "ssh_max_auth_attempts_exceeded", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif message.startswith(("Connection closed by ", "Connection reset by ", "Disconnected from ",
                             "Received disconnect from ", "Disconnecting ")):
        _ssh_disconnect(event, message)
    elif message.startswith("Did not receive identification string from "):
        endpoint = _endpoint(message)
        if endpoint is not None:
            _source(event, endpoint[1], endpoint[2])
    elif "authentication failure" in message:  # "PAM 2 more authentication failures; ... user=root"
        _pam_auth_failure(event, message, "sshd")


def _ssh_disconnect(event: Event, message: str) -> None:
    preauth = message.endswith(" [preauth]")
    if message.startswith("Received disconnect from "):
        rest = message[25:]
        address, _, after = rest.partition(" port ")
        port_text = after.partition(":")[0]
        _source(event, address, int(port_text) if _digits(port_text) and len(port_text) <= 5 else None)
    else:
        found = _endpoint(message.partition(" by ")[2] if message.startswith("Connection ")
                          else message.partition(" ")[2].removeprefix("from "))
        if found is None:
            return
        prefix, address, port, _tail = found
        name, _invalid = _strip_user_words(prefix)
        if prefix:
            _users(event, name)
        _source(event, address, port)
    failed = "Too many authentication failures" in message
    category = ["authentication"] if preauth else ["session"]
    _set(event, "ssh_disconnect", OUTCOME_FAILURE if failed else None, category, ["end"])


def _pam_fields(text: str) -> dict[str, str]:
    """`logname=a uid=0 ... rhost=h  user=u` -> {name: value} (values never hold spaces)."""
    out: dict[str, str] = {}
    for part in text.split(" "):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def _pam_auth_failure(event: Event, details: str, service: str) -> None:
    fields = _pam_fields(details.partition(";")[2])
    user = fields.get("user", "")
    requester = fields.get("ruser") or fields.get("logname") or ""
    if service in ("su", "su-l", "runuser", "runuser-l"):
        _users(event, requester, user)  # su asks for the target's password
    else:
        _users(event, user or requester)
    _source(event, fields.get("rhost", ""))
    _set(event, "authentication_failure", OUTCOME_FAILURE, ["authentication"], ["info"])


def _name_and_uid(text: str) -> tuple[str, str | None]:
    """`ops(uid=1001)` -> ("ops", "1001"); `ops` -> ("ops", None); `(uid=0)` -> ("", "0")."""
    name, paren, rest = text.partition("(uid=")
    return name.strip(), rest.rstrip(")") if paren else None


def _pam(event: Event, message: str) -> bool:
    """`pam_MODULE(SERVICE:TYPE): DETAILS`; True when recognized."""
    head, sep, details = message.partition("): ")
    module, paren, service_type = head.partition("(")
    if not (sep and paren):
        return False
    service, _, kind = service_type.partition(":")
    switch_user = service in _SWITCH_USER_SERVICES
    if details.startswith("session opened for user "):
        who, _, by = details[24:].partition(" by ")
        target, target_id = _name_and_uid(who)
        actor, actor_id = _name_and_uid(by)
        if switch_user and actor and actor != target:
            _users(event, actor, target, effective=True, user_id=actor_id, target_id=target_id)
        else:
            _users(event, target, user_id=target_id)
        _set(event, "logged-on", OUTCOME_SUCCESS, ["session"], ["start"])
    elif details.startswith("session closed for user "):
        name = _name_and_uid(details[24:])[0]
        if switch_user:
            _users(event, None, name, effective=True)
        else:
            _users(event, name)
        _set(event, "logged-off", OUTCOME_SUCCESS, ["session"], ["end"])
    elif details.startswith("authentication failure;"):
        _pam_auth_failure(event, details, service)
    elif details.startswith("auth could not identify password for ["):
        _users(event, details[38:].rstrip("]"))
        _set(event, "authentication_failure", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif kind == "chauthtok":
        changed = details.startswith("password changed for ")
        name = details[21:].strip() if changed else ""
        _users(event, name, name)
        _set(event, "password-changed", OUTCOME_SUCCESS if changed else OUTCOME_FAILURE, ["iam"],
             ["user", "change"])
    elif module == "pam_faillock":
        name = details.partition("for user ")[2].partition(" ")[0]
        _users(event, name)
        _set(event, "account-locked", OUTCOME_FAILURE, ["authentication"], ["info"])
    else:
        return False
    return True


def _sudo(event: Event, message: str) -> None:
    """`USER : [ERROR ; ]TTY=t ; PWD=p ; USER=u ; [GROUP=g ; ][ENV=e ; ]COMMAND=c` (sudo's log format)."""
    who, sep, details = message.partition(" : ")
    if not sep or " " in who.strip() or "=" not in details:
        return
    sudo: dict[str, str] = {}
    command_at = details.find("COMMAND=")
    if command_at >= 0 and (command_at == 0 or details[command_at - 3:command_at] == " ; "):
        sudo["command"] = details[command_at + 8:]  # last, and may itself hold " ; "
        details = details[:max(command_at - 3, 0)]
    for index, part in enumerate(details.split(" ; ")):
        key, eq, value = part.partition("=")
        if eq and key in ("TTY", "PWD", "USER", "GROUP"):
            sudo[key.lower()] = value
        elif index == 0 and not eq:
            sudo["error"] = part
    name = who.strip()
    _users(event, name, sudo.get("user"), effective=True)
    event["system"] = {"auth": {"sudo": sudo}}
    process: dict[str, Any] = event.setdefault("process", {})
    if "command" in sudo:
        process["command_line"] = sudo["command"]
    if "pwd" in sudo:
        process["working_directory"] = sudo["pwd"]
    if "error" in sudo:
        _set(event, "sudo", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif "command" in sudo:
        _set(event, "sudo", OUTCOME_SUCCESS, ["process"], ["start"])


def _su(event: Event, message: str) -> None:
    """shadow-utils `(to T) U on TTY` / `FAILED SU (to T) U on TTY`, util-linux `Successful su for T by U`,
    `FAILED SU (to T) U on TTY`, sulog `+ TTY U:T` / `- TTY U:T`, BSD `'su T' failed for U on TTY`."""
    failed = False
    actor = target = ""
    if message.startswith(("(to ", "FAILED SU (to ")):
        failed = message[0] == "F"
        target, _, rest = message.partition("(to ")[2].partition(") ")
        actor = rest.partition(" on ")[0]
    elif message.startswith(("Successful su for ", "FAILED su for ")):
        failed = message[0] == "F"
        target, _, actor = message.partition(" su for ")[2].partition(" by ")
    elif message[:2] in ("+ ", "- ") and ":" in message:
        failed = message[0] == "-"
        actor, _, target = message.rpartition(" ")[2].partition(":")
    elif message.startswith("'su ") and ("' failed for " in message or "' succeeded for " in message):
        target, _, rest = message[4:].partition("' ")
        failed = rest.startswith("failed")
        actor = rest.partition(" for ")[2].partition(" on ")[0]
    else:
        return
    _users(event, actor, target, effective=True)
    if failed:
        _set(event, "su", OUTCOME_FAILURE, ["authentication"], ["info"])
    else:
        _set(event, "su", OUTCOME_SUCCESS, ["authentication", "session"], ["info"])


def _login(event: Event, message: str) -> None:
    if message.startswith("FAILED LOGIN "):
        name = message.partition(" FOR '")[2].partition("'")[0]
        _users(event, name)
        _set(event, "login", OUTCOME_FAILURE, ["authentication"], ["info"])
    elif message.startswith("ROOT LOGIN "):
        _users(event, "root")
        _set(event, "login", OUTCOME_SUCCESS, ["authentication", "session"], ["info"])
    elif message.startswith("LOGIN ON ") and " BY " in message:
        _users(event, message.rpartition(" BY ")[2].strip())
        _set(event, "login", OUTCOME_SUCCESS, ["authentication", "session"], ["info"])


def _logind(event: Event, message: str) -> None:
    if message.startswith("New session "):
        marker = message.find(" of user ")
        if marker > 0:
            _users(event, message[marker + 9:].rstrip("."))
        _set(event, "session-started", OUTCOME_SUCCESS, ["session"], ["start"])
    elif message.startswith("Removed session "):
        _set(event, "session-ended", OUTCOME_SUCCESS, ["session"], ["end"])


def _key_values(text: str) -> dict[str, str]:
    """`name=ci-runner, UID=1003, home=/home/x` -> {name: value}."""
    out: dict[str, str] = {}
    for part in text.split(", "):
        key, sep, value = part.partition("=")
        if sep:
            out.setdefault(key.strip(), value)
    return out


def _quoted(text: str, after: str) -> str:
    """The first `'...'` following `after` in `text`, or ""."""
    at = text.find(after)
    if at < 0:
        return ""
    rest = text[at + len(after):]
    start = rest.find("'")
    end = rest.find("'", start + 1)
    return rest[start + 1:end] if 0 <= start < end else ""


_ACCOUNT_DEFAULTS = {  # program -> (action, type) when the message names no more precise change
    "useradd": ("added-user-account", ["user", "creation"]),
    "userdel": ("deleted-user-account", ["user", "deletion"]),
    "usermod": ("modified-user-account", ["user", "change"]),
    "chage": ("modified-user-account", ["user", "change"]),
    "groupadd": ("added-group-account", ["group", "creation"]),
    "groupdel": ("deleted-group-account", ["group", "deletion"]),
    "groupmod": ("modified-group-account", ["group", "change"]),
    "gpasswd": ("modified-group-account", ["group", "change"]),
}


def _account(event: Event, program: str, message: str) -> None:
    """shadow-utils account tools (useradd, usermod, userdel, groupadd, groupmod, groupdel, gpasswd,
    chage, passwd, chpasswd): category iam, outcome success unless the line says it failed."""
    action, types = _ACCOUNT_DEFAULTS.get(program, ("", []))
    group: dict[str, str] = {}
    actor = target = ""
    if message.startswith("new user: "):
        values = _key_values(message[10:])
        action, types = "added-user-account", ["user", "creation"]
        target = values.get("name", "")
        user_id = values.get("UID", "")
        if values.get("GID"):
            group["id"] = values["GID"]
        useradd = {key: values[key] for key in ("home", "shell") if key in values}
        if useradd:
            event["system"] = {"auth": {"useradd": useradd}}
        _users(event, target, target, user_id=user_id, target_id=user_id)
        target = ""
    elif message.startswith(("new group: ", "group added to ")):
        values = _key_values(message.partition(": ")[2])
        action, types = "added-group-account", ["group", "creation"]
        group = {"name": values.get("name", "")}
        if values.get("GID"):
            group["id"] = values["GID"]
    elif message.startswith("add '") and " to " in message and "group '" in message:
        target = _quoted(message, "add")
        group["name"] = _quoted(message, " group")
        action, types = "group-member-added", ["group", "change"]
    elif message.startswith("delete '") and " from " in message and "group '" in message:
        target = _quoted(message, "delete")
        group["name"] = _quoted(message, " group")
        action, types = "group-member-removed", ["group", "change"]
    elif message.startswith("delete user '"):
        target = _quoted(message, "delete user")
        action, types = "deleted-user-account", ["user", "deletion"]
    elif message.startswith("removed group '") or (message.startswith("group '") and "' removed" in message):
        group["name"] = _quoted(message, "group")
        action, types = "deleted-group-account", ["group", "deletion"]
    elif message.startswith(("user ", "members of group ")) and " by " in message and program == "gpasswd":
        words = message.split(" ")
        if words[0] == "user" and len(words) >= 7 and words[2] in ("added", "removed"):
            target, actor, group["name"] = words[1], words[4], words[-1]
            action = "group-user-added" if words[2] == "added" else "group-user-removed"
            types = ["group", "change"]
    elif message.startswith("password for '") and "' changed by '" in message:
        target = _quoted(message, "password for")
        actor = _quoted(message, "changed by")
        action, types = "password-changed", ["user", "change"]
    elif message.startswith(("change user ", "lock user ", "unlock user ")):
        target = _quoted(message, "user")
        action, types = "modified-user-account", ["user", "change"]
    elif message.startswith("changed password expiry for "):
        target = message[28:].strip()
        action, types = "modified-user-account", ["user", "change"]
    if not action:
        return
    if target or actor:
        _users(event, actor or target, target)
    if group.get("name") or group.get("id"):
        event["group"] = {key: value for key, value in group.items() if value}
    failed = message.startswith(("failed ", "cannot ", "error ")) or " failed" in message
    _set(event, action, OUTCOME_FAILURE if failed else OUTCOME_SUCCESS, ["iam"], types)


def _classify_auth(event: Event, program: str, message: str) -> None:
    """Set event.action/outcome/category/type and fields for the auth messages we recognize."""
    if message.startswith("pam_") and _pam(event, message):
        return
    handler = _AUTH_HANDLERS.get(program)
    if handler is not None:
        handler(event, message)
    elif program in _ACCOUNT_DEFAULTS or program in ("passwd", "chpasswd"):
        _account(event, program, message)


_AUTH_HANDLERS: dict[str, Callable[[Event, str], None]] = {
    "sshd": _sshd,
    "sshd-session": _sshd,
    "sshd-auth": _sshd,
    "sudo": _sudo,
    "su": _su,
    "login": _login,
    "systemd-logind": _logind,
}


def _related(event: Event) -> None:
    user = event.get("user")
    names: list[str] = []
    if user:
        for holder in (user, user.get("target"), user.get("effective")):
            name = holder.get("name") if holder else None
            if name and name not in names:
                names.append(name)
    related: dict[str, list[str]] = {}
    if names:
        related["user"] = names
    source_ip = event.get("source", {}).get("ip")
    if source_ip:
        related["ip"] = [source_ip]
    if related:
        event["related"] = related


# Timestamps


class _YearLess:
    """Canonical UTC time of RFC 3164 `Mmm dd hh:mm:ss[.ffffff]`, in a zone, with the year inferred."""

    def __init__(self, zone: zoneinfo.ZoneInfo | None) -> None:
        self.zone = zone
        self.ref_received = ""
        self.ref_year = 0
        self.ref_limit = ""
        self.offsets: dict[tuple[int, int, int, int, int], dt.timedelta] = {}

    def reference(self, received: str) -> None:
        """Recomputed only when `received` changes (a batch shares it)."""
        if self.ref_received != received:
            moment = dt.datetime.fromisoformat(received)
            local_year = moment.astimezone(self.zone).year if self.zone is not None else moment.year
            self.ref_received, self.ref_year = received, local_year
            self.ref_limit = format_timestamp(moment + _ONE_DAY)

    def candidate(self, year: int, month: int, day: int, clock: str, fraction: str) -> str | None:
        """Canonical UTC time of a local wall time, or None when the date does not exist."""
        hour, minute, second = int(clock[:2]), int(clock[3:5]), int(clock[6:])
        try:
            wall = dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            return None
        micro = (fraction + "000000")[:6]
        if self.zone is None:
            return f"{year:04d}-{month:02d}-{day:02d}T{clock}.{micro}Z"
        key = (year, month, day, hour, minute)
        offset = self.offsets.get(key)
        if offset is None:
            if len(self.offsets) >= _OFFSET_CACHE_LIMIT:
                self.offsets.clear()
            offset = self.zone.utcoffset(wall) or dt.timedelta(0)
            self.offsets[key] = offset
        try:
            utc = wall - offset
        except OverflowError:
            return None
        text = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        return f"{text}.{micro}Z" if utc.year >= 1000 else None

    def __call__(self, month: int, day: int, clock: str, received: str, year: int | None = None) -> str:
        seconds, _, fraction = clock.partition(".")
        if (
            len(seconds) != 8 or seconds[2] != ":" or seconds[5] != ":"
            or not (_digits(seconds[:2]) and _digits(seconds[3:5]) and _digits(seconds[6:]))
            or (fraction and not _digits(fraction))
        ):
            raise _Malformed(f"syslog: bad time {clock[:20]!r}")
        if year is not None:
            found = self.candidate(year, month, day, seconds, fraction)
            if found is None:
                raise _Malformed(f"syslog: impossible date {year:04d}-{month:02d}-{day:02d} {seconds}")
            return found
        self.reference(received)
        for candidate_year in (self.ref_year, self.ref_year - 1):
            candidate = self.candidate(candidate_year, month, day, seconds, fraction)
            if candidate is not None and (candidate_year < self.ref_year or candidate <= self.ref_limit):
                return candidate
        raise _Malformed(f"syslog: impossible date {month:02d}-{day:02d} {seconds}")


def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The zone of RFC 3164 times (None: UTC, the fast path). Unknown names raise ValueError."""
    if name in _UTC_NAMES:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"syslog_timezone: {name!r} is not a known IANA time zone") from None


def make_assembler(ctx: SourceContext, options: NormalizeOptions) -> Assembler:
    """The pipeline's interface: one event per line, nothing held."""
    return PerLine(make_normalizer(ctx, options))


def make_normalizer(ctx: SourceContext, options: NormalizeOptions | None = None) -> LineNormalizer:
    auth_file = is_auth_file(ctx.path)
    year_less = _YearLess(_zone(options.syslog_timezone if options is not None else "UTC"))

    def parse(line: bytes, offset: int, received: str) -> Event:
        text = line.decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]  # CRLF files
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
        program = ""
        problem: str | None = None
        if priority is not None and rest[:2] == "1 ":
            # RFC 5424
            parts = rest[2:].split(" ", 5)
            if len(parts) < 5:
                raise _Malformed("syslog: truncated RFC 5424 header")
            stamp, hostname, appname, procid, msgid = parts[:5]
            tail = parts[5] if len(parts) == 6 else ""
            if stamp == "-":
                timestamp = received
            else:
                parsed = rfc3339_timestamp(stamp)
                if parsed is None:
                    raise _Malformed(f"syslog: bad RFC 5424 timestamp {stamp[:40]!r}")
                timestamp = parsed
            syslog["version"] = "1"
            structured: dict[str, SDParams] | None = None
            if tail[:1] == "-" and tail[1:2] in ("", " "):
                message = tail[2:]
            elif tail[:1] == "[":
                try:
                    structured, message = _structured_data(tail)
                except _Malformed as exc:
                    problem, message = str(exc), tail
            elif not tail:
                problem, message = "syslog: truncated RFC 5424 header: no STRUCTURED-DATA", ""
            else:
                problem, message = "syslog: bad RFC 5424 STRUCTURED-DATA: neither '-' nor '['", tail
            if message.startswith("\ufeff"):
                message = message[1:]
            program = "" if appname == "-" else appname
            if hostname != "-":
                syslog["hostname"] = hostname
            if program:
                syslog["appname"] = program
            if procid != "-":
                syslog["procid"] = procid
                if _digits(procid) and len(procid) <= 18:
                    pid = int(procid)
            if msgid != "-":
                syslog["msgid"] = msgid
            if structured:
                syslog["structured_data"] = structured
        else:
            # RFC 3164, or the same with an RFC 3339 timestamp
            try:
                timestamp, rest = _header_time(rest, received)
            except _Malformed as exc:
                if priority is None:
                    raise
                # RFC 3164 4.3.2: a valid PRI without a valid TIMESTAMP; the rest is the message.
                problem = f"{exc}; the time of reception is used (RFC 3164 section 4.3.2)"
                timestamp, message = received, rest.lstrip(" ")
            else:
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
                    program, pid = _split_tag(tag)
                    message = after_host[colon + 2:].lstrip(" ")
                else:
                    message = after_host

        auth = (
            auth_file or program in AUTH_PROGRAMS or (priority is not None and priority >> 3 in _AUTH_FACILITIES)
            or (message.startswith("pam_") and "(" in message)
        )
        event = base_event(
            line=line, offset=offset, ctx=ctx, timestamp=timestamp,
            dataset=DATASET_AUTH if auth else DATASET_SYSLOG, action="log", outcome="unknown", category=[],
            types=["info"],
        )
        event["message"] = message
        if program:
            process: dict[str, Any] = {"name": program}
            if pid is not None:
                process["pid"] = pid
            event["process"] = process
        if syslog:
            event["log"]["syslog"] = syslog
        if auth and problem is None:
            _classify_auth(event, program, message)
            _related(event)
        errors = [problem] if problem else []
        if "logseal" in event:
            errors.append("syslog: " + NOT_UTF8)
        if errors:
            event["error"] = {"message": "; ".join(errors)}
        return event

    def _header_time(rest: str, received: str) -> tuple[str, str]:
        """(canonical time, text after the timestamp) of an RFC 3164 or RFC 3339 header."""
        if rest[:1].isdigit():
            stamp, _, after = rest.partition(" ")
            parsed = rfc3339_timestamp(stamp)
            if parsed is None:
                raise _Malformed(f"syslog: bad timestamp {stamp[:40]!r}")
            return parsed, after
        month = _MONTHS.get(rest[:3])
        if month is None or rest[3:4] != " ":
            raise _Malformed("syslog: no RFC 3164 or RFC 5424 header")
        day_text, _, after = rest[4:].lstrip(" ").partition(" ")
        if not (_digits(day_text) and len(day_text) <= 2):
            raise _Malformed(f"syslog: bad day {day_text[:10]!r}")
        clock, _, after = after.partition(" ")
        year: int | None = None
        if len(clock) == 4 and _digits(clock):  # `Mmm dd yyyy hh:mm:ss`
            year = int(clock)
            clock, _, after = after.partition(" ")
        return year_less(month, int(day_text), clock, received, year), after

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
