"""Reading events back out of a store by time, node, dataset, user and action."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.aggregator.index_rows import timestamp_ns
from agent.aggregator.store import connect_index, read_record
from agent.errors import StoreError
from agent.seal import open_payload
from agent.wire import batch_from_bytes

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class EventFilter:
    since_ns: int | None = None
    until_ns: int | None = None
    node: str | None = None
    dataset: str | None = None
    user: str | None = None
    action: str | None = None
    limit: int | None = None


def parse_time(value: str, now: dt.datetime) -> int:
    """RFC 3339 (`2026-01-02T03:04:05Z`), a date, or an age like `15m`, `2h`, `7d` -> ns."""
    match = _RELATIVE.match(value)
    if match:
        moment = now - dt.timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
        return timestamp_ns(moment.isoformat())
    ns = timestamp_ns(value)
    if ns == 0 and value not in ("1970-01-01T00:00:00Z",):
        raise ValueError(f"{value!r} is not a time: use RFC 3339 (2026-01-02T03:04:05Z) or an age (15m, 2h, 7d)")
    return ns


def query_events(store_dir: Path, flt: EventFilter) -> Iterator[dict[str, Any]]:
    index_path = store_dir / "index.db"
    if not index_path.is_file():
        raise StoreError(f"{store_dir} is not a logseal store (no index.db)")
    db = connect_index(index_path, readonly=True)
    clauses: list[str] = []
    params: list[str | int] = []
    for column, value in (("e.node", flt.node), ("e.dataset", flt.dataset), ("e.user", flt.user),
                          ("e.action", flt.action)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if flt.since_ns is not None:
        clauses.append("e.ts_ns >= ?")
        params.append(flt.since_ns)
    if flt.until_ns is not None:
        clauses.append("e.ts_ns < ?")
        params.append(flt.until_ns)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    limit = f"LIMIT {int(flt.limit)}" if flt.limit is not None else ""
    sql = (f"SELECT e.batch_id, e.idx, b.segment, b.offset, b.length FROM events e JOIN batches b "
           f"ON b.id = e.batch_id {where} ORDER BY e.ts_ns, e.batch_id, e.idx {limit}")
    cached_id = -1
    cached: list[bytes] = []
    try:
        for batch_id, idx, segment, offset, length in db.execute(sql, params):
            if batch_id != cached_id:
                cached = _batch_events(store_dir / "segments" / segment, offset, length)
                cached_id = batch_id
            if idx < len(cached):
                yield orjson.loads(cached[idx])
    finally:
        db.close()


def _batch_events(path: Path, offset: int, length: int) -> list[bytes]:
    raw = read_record(path, offset, length)
    opened = open_payload(batch_from_bytes(raw))
    if opened.body is None:
        raise StoreError(f"{path.name}@{offset}: {opened.finding}; run `logseal verify`")
    return opened.body.split(b"\n") if opened.body else []


def table_row(event: dict[str, Any]) -> str:
    ev = event.get("event", {})
    user = (event.get("user") or {}).get("name") or "-"
    summary = event.get("message") or ev.get("original") or ""
    if isinstance(summary, str) and len(summary) > 80:
        summary = summary[:77] + "..."
    return (f"{event.get('@timestamp', '-'):<27}  {(event.get('host') or {}).get('name', '-'):<12}  "
            f"{ev.get('dataset', '-'):<17}  {str(ev.get('action', '-')):<16}  {ev.get('outcome', '-'):<8}  "
            f"{user:<20}  {summary}")


TABLE_HEADER = (f"{'@timestamp':<27}  {'host':<12}  {'dataset':<17}  {'action':<16}  {'outcome':<8}  "
                f"{'user':<20}  summary")
