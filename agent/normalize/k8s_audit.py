"""Kubernetes API-server audit log (audit.k8s.io/v1 and v1beta1 `Event`, one JSON object per line).

Mapping (dataset `kubernetes.audit`, following Elastic's Kubernetes integration):

* `@timestamp`: `requestReceivedTimestamp`, else `stageTimestamp`, else `timestamp` (v1beta1),
  else `received`. A value that is not a valid RFC 3339 time is skipped, never copied.
* `event.action` = `verb`; `event.category` = ["api"]; `event.type` from the verb: get/list/watch
  -> access, create -> creation, update/patch -> change, delete/deletecollection -> deletion,
  anything else -> info.
* `event.outcome` from `responseStatus.code`: < 400 success, >= 400 failure, absent -> unknown.
* `user.name` / `user.id` / `user.group.name` from `user.username` / `user.uid` / `user.groups`,
  `source.ip` = first of `sourceIPs`, `user_agent.original` = `userAgent`.
* `kubernetes.audit` = the whole audit event with its own camelCase names
  (`kubernetes.audit.objectRef.resource`, `kubernetes.audit.responseStatus.code`, ...), carried as
  the line's own bytes (`orjson.Fragment`): the record as the API server wrote it, byte for byte,
  and no cost to re-encode it. In process it is therefore opaque until serialized.
* `event.original` is left out by default for such lines, since `kubernetes.audit` already is the
  exact original (a source may set `keep_original = true`); it is kept for every line that needed
  repair or could not be parsed.

Bad input (the normalizer never raises):

* not JSON, truncated JSON, JSON that is not an object, `kind` other than "Event", `verb` missing or
  not a non-empty string: `unparsed_event` whose `error.message` says why, e.g.
  "k8s_audit: not an audit Event: missing 'verb'".
* bytes that are not UTF-8: the line is decoded with U+FFFD replacements and parsed best-effort;
  `error.message` says so and the exact bytes are in `logseal.original_base64`.
* a real Event whose optional fields have the wrong type (e.g. `"user": "x"`, `sourceIPs` not a
  list of strings, `responseStatus.code` not an integer): still a normal event; the ECS fields that
  would come from the bad field are left out, `error.message` names the ignored fields, and the
  original value stays under `kubernetes.audit`. Timestamps that are not valid times are skipped
  in the fallback order above without a note.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson

from agent.normalize.common import (
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    OUTCOME_UNKNOWN,
    Event,
    SourceContext,
    base_event,
    canonical_timestamp,
    decode_line,
    unparsed_event,
)

DATASET = "kubernetes.audit"

_EVENT_TYPE_BY_VERB = {
    "get": "access",
    "list": "access",
    "watch": "access",
    "create": "creation",
    "update": "change",
    "patch": "change",
    "delete": "deletion",
    "deletecollection": "deletion",
}

# Longest textual IP address (IPv6 with an embedded IPv4 tail); longer strings are not addresses.
_MAX_IP_TEXT = 45
_IPV6_CHARS = "0123456789abcdefABCDEF:."

NOT_UTF8 = "line is not valid UTF-8: parsed with U+FFFD replacements; exact bytes in logseal.original_base64"


def looks_like_ip(value: str) -> bool:
    """Cheap shape check for an IPv4/IPv6 literal (ECS `source.ip` rejects anything else).

    Not full validation (`ipaddress` costs microseconds): only what a SIEM's `ip` type would refuse
    outright -- host names, empty strings, `?` -- is kept out.
    """
    if not 2 <= len(value) <= _MAX_IP_TEXT:
        return False
    if ":" in value:
        return not value.strip(_IPV6_CHARS)
    return value.count(".") == 3 and value.isascii() and value.replace(".", "").isdigit()


def rfc3339_timestamp(value: object) -> str | None:
    """Canonical form of an RFC 3339 timestamp, or None for anything else (any type, never raises)."""
    if type(value) is not str:
        return None
    if len(value) == 27 and value[26] == "Z" and value[19] == "." and value[10] == "T":
        # Canonical in shape: check that it is a real date and time (cheap, in C). Never hand such a
        # string to canonical_timestamp, which takes the shape on trust.
        if not (value[4:20:3] == "--T::." and value.isascii() and value[20:26].isdigit()):
            return None
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return value
    try:
        result = canonical_timestamp(value)
    except (ValueError, OverflowError):
        return None
    # Years before 1000 do not format to the fixed-width canonical form: not a usable time.
    return result if result is not None and len(result) == 27 else None


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def make_normalizer(ctx: SourceContext) -> Callable[[bytes, int, str], Event]:
    def unparsed(line: bytes, offset: int, received: str, error: str) -> Event:
        return unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET,
                              error=error)

    def normalize(line: bytes, offset: int, received: str) -> Event:
        try:
            problems: list[str] | None = None
            verbatim = True
            try:
                audit = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                verbatim = False
                text, exact = decode_line(line)
                if exact is None:
                    return unparsed(line, offset, received, f"k8s_audit: invalid JSON: {exc}")
                try:
                    audit = orjson.loads(text)
                except orjson.JSONDecodeError as exc2:
                    return unparsed(line, offset, received, f"k8s_audit: invalid JSON: {exc2}")
                problems = [NOT_UTF8]

            if type(audit) is not dict:
                return unparsed(line, offset, received,
                                f"k8s_audit: not an audit Event: JSON {type(audit).__name__}, not an object")
            verb = audit.get("verb")
            if type(verb) is not str or not verb:
                what = "missing 'verb'" if verb is None else f"'verb' is {_brief(verb)}, not a name"
                return unparsed(line, offset, received, f"k8s_audit: not an audit Event: {what}")
            kind = audit.get("kind")
            if kind != "Event":
                what = "missing 'kind'" if kind is None else f"'kind' is {_brief(kind)}, expected 'Event'"
                return unparsed(line, offset, received, f"k8s_audit: not an audit Event: {what}")

            timestamp = (
                rfc3339_timestamp(audit.get("requestReceivedTimestamp"))
                or rfc3339_timestamp(audit.get("stageTimestamp"))
                or rfc3339_timestamp(audit.get("timestamp"))
                or received
            )

            status = audit.get("responseStatus")
            code = status.get("code") if type(status) is dict else None
            if type(code) is int:
                outcome = OUTCOME_SUCCESS if code < 400 else OUTCOME_FAILURE
            else:
                outcome = OUTCOME_UNKNOWN
                if code is not None or (status is not None and type(status) is not dict):
                    problems = (problems or []) + ["'responseStatus.code' is not an integer"]

            event = base_event(
                line=line, offset=offset, ctx=ctx, timestamp=timestamp, dataset=DATASET, action=verb,
                outcome=outcome, category=["api"], types=[_EVENT_TYPE_BY_VERB.get(verb, "info")],
                keep_original=not verbatim,
            )

            user = audit.get("user")
            if type(user) is dict:
                ecs_user: dict[str, Any] = {}
                name = user.get("username")
                if type(name) is str:
                    ecs_user["name"] = name
                uid = user.get("uid")
                if type(uid) is str:
                    ecs_user["id"] = uid
                groups = user.get("groups")
                if type(groups) is list and all(type(group) is str for group in groups):
                    ecs_user["group"] = {"name": groups}
                elif groups is not None:
                    problems = (problems or []) + ["'user.groups' is not a list of strings"]
                if ecs_user:
                    event["user"] = ecs_user
            elif user is not None:
                problems = (problems or []) + ["'user' is not an object"]

            source_ips = audit.get("sourceIPs")
            if type(source_ips) is list:
                if source_ips:
                    first = source_ips[0]
                    if type(first) is str and looks_like_ip(first):
                        event["source"] = {"ip": first}
                    else:
                        problems = (problems or []) + ["'sourceIPs[0]' is not an address"]
            elif source_ips is not None:
                problems = (problems or []) + ["'sourceIPs' is not a list"]

            user_agent = audit.get("userAgent")
            if type(user_agent) is str:
                event["user_agent"] = {"original": user_agent}
            elif user_agent is not None:
                problems = (problems or []) + ["'userAgent' is not a string"]

            # Valid UTF-8 JSON goes into the payload byte for byte (no re-encoding, and it is the
            # original record); a line repaired from bad UTF-8 is re-encoded from what was parsed.
            event["kubernetes"] = {"audit": orjson.Fragment(line) if verbatim else audit}
            if problems:
                event["error"] = {"message": "k8s_audit: " + "; ".join(problems)}
            return event
        except Exception as exc:  # the invariant: an event for every line, whatever it holds
            return unparsed(line, offset, received,
                            f"k8s_audit: internal error: {type(exc).__name__}: {_brief(str(exc))}")

    return normalize
