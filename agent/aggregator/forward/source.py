"""Reading the store's own log in ingest order, from a position, without disturbing ingest.

A position is (batch id, index of the next event in that batch): batch ids are the store's ingest
order (`batches.id`, from 1, no holes), so "everything after the cursor" is exact and stable. The
reader has its own read-only SQLite connection (the index is in WAL mode: readers never block the
single writer) and opens each batch's payload as `logseal query` does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.aggregator.store import connect_index, read_record
from agent.seal import open_payload
from agent.wire import WireError, batch_from_bytes

Position = tuple[int, int]
OLDEST: Position = (1, 0)
BATCHES_PER_READ = 256


@dataclass(frozen=True)
class Entry:
    """One stored event (or a batch that cannot be read: `problem`), with the position after it."""

    after: Position
    event: dict[str, Any] | None = None
    problem: str = ""


class StoreReader:
    def __init__(self, store_dir: Path) -> None:
        self.index_path = store_dir / "index.db"
        self.segments = store_dir / "segments"
        self._db: sqlite3.Connection | None = None
        self._cached: tuple[int, list[bytes]] = (0, [])

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect_index(self.index_path, readonly=True)
        return self._db

    def newest(self) -> Position:
        """The position just after the last stored event."""
        row = self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()
        return (int(row[0]) + 1, 0)

    def lag(self, position: Position) -> int:
        """Stored events after `position`."""
        row = self._conn().execute("SELECT COALESCE(SUM(event_count), 0) FROM batches WHERE id >= ?",
                                   (position[0],)).fetchone()
        return max(0, int(row[0]) - position[1])

    def read(self, position: Position, limit: int) -> list[Entry]:
        """Up to `limit` entries after `position`, in ingest order."""
        out: list[Entry] = []
        batch_id, start = position
        while len(out) < limit:
            rows = self._conn().execute(
                "SELECT id, segment, offset, length, event_count, dropped FROM batches WHERE id >= ? "
                "ORDER BY id LIMIT ?", (batch_id, BATCHES_PER_READ)).fetchall()
            if not rows:
                break
            for bid, segment, offset, length, count, dropped in rows:
                first = start if bid == position[0] else 0
                if dropped or count <= first:
                    continue
                try:
                    lines = self._events(bid, segment, offset, length)
                except (OSError, WireError, ValueError) as exc:
                    out.append(Entry((bid, count), problem=f"batch {bid} ({segment}@{offset}) cannot be read: {exc}"))
                    continue
                for idx in range(first, len(lines)):
                    try:
                        event = orjson.loads(lines[idx])
                    except orjson.JSONDecodeError as exc:
                        out.append(Entry((bid, idx + 1), problem=f"batch {bid} event {idx} is not JSON: {exc}"))
                        continue
                    out.append(Entry((bid, idx + 1), event))
                    if len(out) >= limit:
                        return out
            batch_id = int(rows[-1][0]) + 1
        return out

    def _events(self, batch_id: int, segment: str, offset: int, length: int) -> list[bytes]:
        if self._cached[0] == batch_id:
            return self._cached[1]
        opened = open_payload(batch_from_bytes(read_record(self.segments / segment, offset, length)))
        if opened.body is None:
            raise ValueError(f"{opened.finding.verdict.name}: {opened.finding.reason}; run `logseal verify`")
        lines = opened.body.split(b"\n") if opened.body else []
        self._cached = (batch_id, lines)
        return lines

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
