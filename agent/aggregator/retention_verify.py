"""Which retention records `verify` may trust, so it can tell "deleted by retention policy" from "missing".

A record is trusted only if its signature verifies with the aggregator key under the log's origin,
its batch range is exactly the batches the index places in its segment, its leaf range is that
batch range minus one, and its signed `leaves_root` is the root of those batches' leaf hashes in
the index. Anything else is a `bad-retention-record` problem, and the record's batches, if gone,
are reported `missing` as if there were no record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import merkle
from agent.aggregator.retention_policy import format_ns
from agent.aggregator.retention_records import RECORD_COLUMNS, RetentionRecord, leaves_root, open_record
from agent.checkpoint import CheckpointError

BAD_RECORD = "bad-retention-record"

BatchRow = Sequence[Any]
"""A `batches` row as verify reads it: id, node, stream, seq, hash, segment, offset, length, ..."""


@dataclass(frozen=True)
class Deleted:
    """A trusted record and the index rows of the batches it deleted, in ingest order."""

    record: RetentionRecord
    rows: tuple[BatchRow, ...]

    def describe(self) -> str:
        r = self.record
        span = f" from {format_ns(r.first_ns)} to {format_ns(r.last_ns)}" if r.events else ""
        return (f"deleted by retention policy: segment {r.segment}, batches {r.first_batch_id}-{r.last_batch_id} "
                f"(Merkle leaves {r.first_leaf}-{r.last_leaf}), {r.events} event(s){span}, {r.bytes} bytes, "
                f"rule {r.rule}, signed record #{r.id} of {format_ns(r.time_ns)}")

    def leaves(self) -> list[bytes]:
        return [merkle.leaf_hash(bytes(row[4])) for row in self.rows]


def trusted_deletions(db: sqlite3.Connection, rows: Sequence[BatchRow], origin: str | None,
                      public_key: Ed25519PublicKey | None,
                      add: Callable[[str, str, str, str], None]) -> dict[str, Deleted]:
    """Trusted records by segment name; every other record is reported through `add`."""
    try:
        records = [RetentionRecord.from_row(r) for r in
                   db.execute(f"SELECT {RECORD_COLUMNS} FROM retention ORDER BY id").fetchall()]
    except sqlite3.Error:  # a store that never ran retention
        return {}
    by_segment: dict[str, list[BatchRow]] = {}
    for row in rows:
        by_segment.setdefault(str(row[5]), []).append(row)
    trusted: dict[str, Deleted] = {}
    for r in records:
        where = f"retention record #{r.id} ({r.segment})"
        if public_key is None or origin is None:
            add(BAD_RECORD, where, "", "no aggregator public key or log origin to check the record with "
                                       "(give --aggregator-pub FILE)")
            continue
        try:
            open_record(r, origin, public_key)
        except CheckpointError as exc:
            add(BAD_RECORD, where, "", f"the record's signature does not verify with the aggregator key: {exc}")
            continue
        batch_rows = sorted(by_segment.get(r.segment, []), key=lambda row: int(row[0]))
        ids = [int(row[0]) for row in batch_rows]
        if ids != list(range(r.first_batch_id, r.last_batch_id + 1)):
            held = f"{ids[0]}-{ids[-1]} ({len(ids)} batches)" if ids else "no batches"
            add(BAD_RECORD, where, "", f"signed for batches {r.first_batch_id}-{r.last_batch_id}, but the index "
                                       f"places {held} in that segment")
            continue
        if (r.first_leaf, r.last_leaf) != (r.first_batch_id - 1, r.last_batch_id - 1):
            add(BAD_RECORD, where, "", f"leaves {r.first_leaf}-{r.last_leaf} are not batches "
                                       f"{r.first_batch_id}-{r.last_batch_id} (leaf = batch - 1)")
            continue
        deleted = Deleted(r, tuple(batch_rows))
        if leaves_root(deleted.leaves()) != r.leaves_root:
            add(BAD_RECORD, where, "", "the index's batch hashes for this range are not the leaves the record "
                                       "signed: the index was changed after the deletion")
            continue
        if r.segment in trusted:
            add(BAD_RECORD, where, "", f"a second record for segment {r.segment}")
            continue
        trusted[r.segment] = deleted
    return trusted
