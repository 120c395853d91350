"""Pure extraction of the index columns from a stored batch's events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp_ns(value: Any) -> int:
    """Nanoseconds of an RFC 3339 timestamp; 0 when absent or unreadable."""
    if not isinstance(value, str):
        return 0
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


IndexRow = tuple[int, int, str | None, str | None, str | None]
"""(index in batch, @timestamp ns, event.dataset, user.name, event.action)"""


def index_row(position: int, event: dict[str, Any]) -> IndexRow:
    ev = event.get("event")
    ev = ev if isinstance(ev, dict) else {}
    user = event.get("user")
    user_name = _text(user.get("name")) if isinstance(user, dict) else None
    return (position, timestamp_ns(event.get("@timestamp")), _text(ev.get("dataset")), user_name,
            _text(ev.get("action")))


def index_rows(body: bytes) -> list[IndexRow]:
    if not body:
        return []
    return [index_row(i, orjson.loads(line)) for i, line in enumerate(body.split(b"\n"))]
