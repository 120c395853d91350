"""Shared helpers for the pure normalizers: the always-present ECS fields and raw-line preservation.

Invariant: every normalizer returns an event for every line it is given. A line it cannot parse
becomes an event with `error.message` and the raw line in `event.original`; bytes that are not
valid UTF-8 are kept exactly in `logseal.original_base64` (JSON cannot carry them).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]

OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a normalizer knows about where a line came from; passed in, never looked up."""

    host_name: str
    path: str
    # Keep the raw line in `event.original` (ECS). None: the family's default (kept, except where the
    # whole record is already carried verbatim, as Kubernetes audit JSON under `kubernetes.audit`).
    # Bytes that are not UTF-8 are always kept exactly, in `logseal.original_base64`.
    keep_original: bool | None = None


def decode_line(line: bytes) -> tuple[str, str | None]:
    """Text of a line, plus its base64 when the bytes are not valid UTF-8 (so they survive exactly)."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), base64.b64encode(line).decode("ascii")


def canonical_timestamp(value: str) -> str | None:
    """RFC 3339 UTC with microseconds and a `Z`, or None when `value` is not a timestamp.

    The canonical form sorts lexically in time order, which batching relies on.
    """
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (ValueError, TypeError):
        return None
    if len(value) == 27 and value[-1] == "Z" and value[19] == "." and value[10] == "T":
        return value  # already canonical (and, as just parsed, a real time)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        result = format_timestamp(parsed)
    except (ValueError, OverflowError):
        return None
    return result if len(result) == 27 else None


def format_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp_from_epoch(seconds: float) -> str:
    return format_timestamp(dt.datetime.fromtimestamp(seconds, dt.UTC))


def timestamp_to_ns(value: str) -> int:
    """Nanoseconds since the epoch of a canonical timestamp."""
    moment = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


def base_event(
    *,
    line: bytes,
    offset: int,
    ctx: SourceContext,
    timestamp: str,
    dataset: str,
    action: str,
    outcome: str,
    category: list[str],
    types: list[str],
    kind: str = "event",
    keep_original: bool = True,
) -> Event:
    """The always-present fields of the normalized schema (design.md, "Normalized event").

    `keep_original` is the family's default, used when the source does not say.
    """
    text, exact = decode_line(line)
    if ctx.keep_original is not None:
        keep_original = ctx.keep_original
    event_fields: dict[str, Any] = {
        "kind": kind,
        "category": category,
        "type": types,
        "action": action,
        "outcome": outcome,
        "dataset": dataset,
    }
    if keep_original or exact is not None:
        event_fields["original"] = text
    event: Event = {
        "@timestamp": timestamp,
        "event": event_fields,
        "host": {"name": ctx.host_name},
        "log": {"file": {"path": ctx.path}, "offset": offset},
    }
    if exact is not None:
        event["logseal"] = {"original_base64": exact}
    return event


def unparsed_event(*, line: bytes, offset: int, ctx: SourceContext, received: str, dataset: str,
                   error: str) -> Event:
    """An event for a line the normalizer could not parse: raw line kept, reason stated, time = received."""
    event = base_event(
        line=line, offset=offset, ctx=ctx, timestamp=received, dataset=dataset, action="unparsed",
        outcome=OUTCOME_UNKNOWN, category=[], types=["info"],
    )
    event["event"]["original"] = decode_line(line)[0]
    event["error"] = {"message": error}
    return event


def get_field(event: Event, dotted: str) -> Any:
    """Value at a dotted ECS path (`user.name`), or None. Literal dotted keys (`@timestamp`) work too."""
    if dotted in event:
        return event[dotted]
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
