"""Kubernetes API-server audit log (audit.k8s.io/v1 and v1beta1 `Event`, one JSON object per line).

Mapping (dataset `kubernetes.audit`, following Elastic's Kubernetes integration):

* `@timestamp`: `requestReceivedTimestamp`, else `stageTimestamp`, else `timestamp` (v1beta1),
  else `received`. A value that is not a valid RFC 3339 time is skipped, never copied.
* `event.action` = `verb`; `event.category` = ["api"]; `event.type` from the verb: get/list/watch
  -> access, create -> creation, update/patch -> change, delete/deletecollection -> deletion,
  anything else -> info.
* `event.outcome`: failure when the `authorization.k8s.io/decision` annotation is "forbid";
  otherwise from `responseStatus.code`: < 400 success, >= 400 failure, absent -> unknown.
* `user.name` / `user.id` / `user.group.name` from `user.username` / `user.uid` / `user.groups`;
  impersonation: `user.effective.name` / `.id` / `.group.name` from `impersonatedUser` (the
  requesting user stays in `user.*`); `related.user` = both user names.
* `source.ip` = first of `sourceIPs`, every address of `sourceIPs` in `related.ip`;
  `user_agent.original` = `userAgent`.
* `kubernetes.audit` = the whole audit event with its own camelCase names
  (`kubernetes.audit.objectRef.resource`, `kubernetes.audit.responseStatus.code`, ...), carried as
  the line's own bytes (`orjson.Fragment`): the record as the API server wrote it, byte for byte,
  and no cost to re-encode it. In process it is therefore opaque until serialized.
* `event.original` is left out by default for such lines, since `kubernetes.audit` already is the
  exact original (a source may set `keep_original = true`); it is kept for every line that needed
  repair or could not be parsed.

Policy and redaction (`make_assembler`, see `k8s_policy` and `k8s_redact`):

* An audit Policy, when the source has one, is applied with the kube-apiserver's semantics: an Event
  at level None or in an omitted stage is dropped and counted (`dropped_by_policy.rule_<i>`,
  `dropped_by_policy.rule_none` when no rule matched, `dropped_by_policy.omit_stage.<Stage>`);
  a kept Event loses the objects its level does not record (listed in `logseal.policy.removed`).
* Secrets are redacted, always (`logseal.redacted` lists the paths within `kubernetes.audit`).
* An Event changed by either is carried as the changed record, re-encoded, never the verbatim line,
  and WITHOUT `event.original` and `logseal.original_base64`, whatever `keep_original` says: both
  would hold the very values that were removed. The raw line of such an Event is therefore not
  recoverable from the stored event; that is the point.
* Lines that are not an audit Event (unparsed) are kept as they are, raw line included: nothing in
  them can be located reliably enough to redact.

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

from agent.normalize.assemble import HeldLine, NormalizeOptions
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
from agent.normalize.k8s_policy import LEVEL_NONE, AuditPolicy, apply_decision
from agent.normalize.k8s_redact import Redactor, marker

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
NOT_UTF8_CHANGED = ("line is not valid UTF-8: parsed with U+FFFD replacements; exact bytes withheld since the "
                    "event was redacted or stripped")
DECISION = "authorization.k8s.io/decision"

Normalize = Callable[[bytes, int, str], "Event | None"]


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


def _ecs_user(user: dict[str, Any], field: str, problems: list[str] | None) -> tuple[dict[str, Any], list[str] | None]:
    """ECS `user.*` fields of an audit UserInfo; `field` names it in problems."""
    ecs_user: dict[str, Any] = {}
    name = user.get("username")
    if type(name) is str:
        ecs_user["name"] = name
    uid = user.get("uid")
    if type(uid) is str:
        ecs_user["id"] = uid
    groups = user.get("groups")
    if type(groups) is list:
        try:
            "".join(groups)  # in C: a TypeError unless every group is a string
            ecs_user["group"] = {"name": groups}
        except TypeError:
            problems = (problems or []) + [f"'{field}.groups' is not a list of strings"]
    elif groups is not None:
        problems = (problems or []) + [f"'{field}.groups' is not a list of strings"]
    return ecs_user, problems


# Signs of a value worth hiding: Secret data, token fields, credentials (names of resources alone,
# like "secrets" in a Metadata-level event, are not).
_CREDENTIAL_HINTS = (b'"data"', b'"stringdata"', b'"token"', b'"password"', b'"authorization"', b"authorization:",
                     b"bearer ", b"basic ")


def may_hold_credentials(line: bytes) -> bool:
    """Whether an unparsable audit line could carry a credential (cheap, errs on the side of yes)."""
    lowered = line.lower()
    return any(hint in lowered for hint in _CREDENTIAL_HINTS)


def _make(ctx: SourceContext, policy: AuditPolicy | None, redactor: Redactor,
          counters: dict[str, int]) -> Normalize:
    """The normalizer of one source: an event per line, or None for an Event the policy drops."""

    def count(name: str) -> None:
        counters[name] = counters.get(name, 0) + 1

    def unparsed(line: bytes, offset: int, received: str, error: str) -> Event:
        event = unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET,
                               error=error)
        if may_hold_credentials(line):
            # Not parsed, so not redacted field by field: keep only a keyed hash of the whole line.
            event["event"]["original"] = marker(redactor.key, line.decode("utf-8", "surrogateescape"))
            event["logseal"] = {"redacted": ["event.original"]}
            event["error"]["message"] += "; raw line withheld (it may hold credentials), its keyed hash kept"
            count("withheld_unparsed_lines")
        return event

    def normalize(line: bytes, offset: int, received: str) -> Event | None:
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

            removed: list[str] = []
            changed = False
            if policy is not None:
                decision = policy.evaluate(audit)
                if decision.level == LEVEL_NONE:
                    count("dropped_by_policy.rule_none" if decision.rule is None
                          else f"dropped_by_policy.rule_{decision.rule}")
                    return None
                stage = audit.get("stage")
                if type(stage) is str and stage in decision.omit_stages:
                    count(f"dropped_by_policy.omit_stage.{stage}")
                    return None
                removed, changed = apply_decision(audit, decision)
            redacted = redactor.redact(audit, line)
            if redacted:
                changed = True

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
            annotations = audit.get("annotations")
            if type(annotations) is dict and annotations.get(DECISION) == "forbid":
                outcome = OUTCOME_FAILURE

            event = base_event(
                line=line, offset=offset, ctx=ctx, timestamp=timestamp, dataset=DATASET, action=verb,
                outcome=outcome, category=["api"], types=[_EVENT_TYPE_BY_VERB.get(verb, "info")],
                keep_original=not verbatim,
            )
            if changed:  # the raw line holds what was removed: keep none of it (module docstring)
                event["event"].pop("original", None)
                if event.pop("logseal", None) is not None and problems:
                    problems[0] = NOT_UTF8_CHANGED

            related: dict[str, list[str]] = {}
            user = audit.get("user")
            ecs_user: dict[str, Any] | None = None
            if type(user) is dict:
                ecs_user, problems = _ecs_user(user, "user", problems)
                if "name" in ecs_user:
                    related["user"] = [ecs_user["name"]]
                if ecs_user:
                    event["user"] = ecs_user
            elif user is not None:
                problems = (problems or []) + ["'user' is not an object"]
            impersonated = audit.get("impersonatedUser")
            if type(impersonated) is dict:
                effective, problems = _ecs_user(impersonated, "impersonatedUser", problems)
                if effective:
                    if ecs_user is None:
                        ecs_user = event["user"] = {}
                    elif not ecs_user:
                        event["user"] = ecs_user
                    ecs_user["effective"] = effective
                    name = effective.get("name")
                    if name is not None and name not in related.get("user", ()):
                        related.setdefault("user", []).append(name)
            elif impersonated is not None:
                problems = (problems or []) + ["'impersonatedUser' is not an object"]

            source_ips = audit.get("sourceIPs")
            if type(source_ips) is list:
                if source_ips:
                    first = source_ips[0]
                    if type(first) is str and looks_like_ip(first):
                        event["source"] = {"ip": first}
                        if len(source_ips) == 1:
                            related["ip"] = [first]
                    else:
                        problems = (problems or []) + ["'sourceIPs[0]' is not an address"]
                    if len(source_ips) > 1:
                        addresses = [ip for ip in source_ips if type(ip) is str and looks_like_ip(ip)]
                        if addresses:
                            related["ip"] = list(dict.fromkeys(addresses))
            elif source_ips is not None:
                problems = (problems or []) + ["'sourceIPs' is not a list"]
            if related:
                event["related"] = related

            user_agent = audit.get("userAgent")
            if type(user_agent) is str:
                event["user_agent"] = {"original": user_agent}
            elif user_agent is not None:
                problems = (problems or []) + ["'userAgent' is not a string"]

            # Valid UTF-8 JSON goes into the payload byte for byte (no re-encoding, and it is the
            # original record); a line repaired from bad UTF-8 is re-encoded from what was parsed.
            event["kubernetes"] = {"audit": orjson.Fragment(line) if verbatim and not changed else audit}
            if changed:
                marks: dict[str, Any] = {}
                if redacted:
                    marks["redacted"] = redacted
                if policy is not None:
                    marks["policy"] = {"rule": decision.rule, "level": decision.level, "removed": removed}
                event["logseal"] = marks
            if problems:
                event["error"] = {"message": "k8s_audit: " + "; ".join(problems)}
            return event
        except Exception as exc:  # the invariant: an event for every line, whatever it holds
            return unparsed(line, offset, received,
                            f"k8s_audit: internal error: {type(exc).__name__}: {_brief(str(exc))}")

    return normalize


def make_normalizer(ctx: SourceContext, options: NormalizeOptions | None = None) -> Callable[[bytes, int, str], Event]:
    """One event per line, redacted (always) but with no policy: nothing is ever dropped."""
    options = options or NormalizeOptions()
    normalize = _make(ctx, None, Redactor(options.redact_key, options.redact_paths), {})

    def per_line(line: bytes, offset: int, received: str) -> Event:
        event = normalize(line, offset, received)
        assert event is not None  # no policy, no drop
        return event

    return per_line


class K8sAuditAssembler:
    """The assembler of a `k8s_audit` source: a policy may drop an Event (counted), nothing is held."""

    def __init__(self, ctx: SourceContext, options: NormalizeOptions) -> None:
        policy = options.k8s_policy
        if policy is not None and not isinstance(policy, AuditPolicy):
            raise TypeError(f"k8s_policy must be an AuditPolicy, not {type(policy).__name__}")
        self._counters: dict[str, int] = {}
        self._normalize = _make(ctx, policy, Redactor(options.redact_key, options.redact_paths), self._counters)

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        event = self._normalize(line, offset, received)
        return [] if event is None else [event]

    def flush(self, received: str, force: bool = False) -> list[Event]:
        return []

    def held(self) -> list[HeldLine]:
        return []

    def counters(self) -> dict[str, int]:
        return self._counters


def make_assembler(ctx: SourceContext, options: NormalizeOptions) -> K8sAuditAssembler:
    return K8sAuditAssembler(ctx, options)
