"""Retention and legal holds on a store: read the facts, plan (retention_policy), delete, record.

Design constraints:
- A segment is deleted in two steps: (1) one SQLite transaction (`BEGIN IMMEDIATE`, committed with
  synchronous=FULL, so fsynced) inserts the signed retention record and removes the segment's
  event index rows; (2) the file is unlinked and its folder fsynced. A crash between the two leaves
  a record whose segment still exists: `verify` accepts it (the batches are there), and the next
  run finishes the unlink (`finish_interrupted`).
- Inside that transaction the segment is checked again: not already recorded, its batches a
  contiguous id range, and no active legal hold matching any of its events (a hold added after
  planning still wins).
- `batches` rows stay: their hashes are the Merkle leaves `verify` needs to recompute the tree, and
  the record's `leaves_root` (signed) covers them.
- Legal holds are rows in `legal_holds`, never deleted; a release sets `released_ns`.

Works on a bare index connection, so it runs in the aggregator's store thread or from the CLI
alongside a running aggregator (SQLite locking; the CLI waits up to its busy timeout).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent.aggregator.retention_policy import Decision, Hold, Plan, RetentionPolicy, SegmentFacts, plan
from agent.aggregator.retention_records import (
    RECORD_COLUMNS,
    RETENTION_SCHEMA,
    RetentionRecord,
    leaves_root,
    one_line,
    sign_record,
)
from agent.aggregator.store import connect_index
from agent.durable import fsync_dir
from agent.errors import StoreError

log = logging.getLogger(__name__)

_HOLD_COLUMNS = ("id, created_ns, reason, node, dataset, user, action, since_ns, until_ns, released_ns, "
                 "release_reason")


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(RETENTION_SCHEMA)


def read_records(db: sqlite3.Connection) -> list[RetentionRecord]:
    return [RetentionRecord.from_row(r) for r in db.execute(f"SELECT {RECORD_COLUMNS} FROM retention ORDER BY id")]


# --- legal holds ---------------------------------------------------------------------------------


def read_holds(db: sqlite3.Connection, *, include_released: bool = False) -> list[Hold]:
    where = "" if include_released else "WHERE released_ns IS NULL"
    return [Hold(*row) for row in db.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds {where} ORDER BY id")]


def add_hold(db: sqlite3.Connection, hold: Hold, now_ns: int) -> Hold:
    """Record a new hold (its id and time are assigned here)."""
    cur = db.execute("INSERT INTO legal_holds (created_ns, reason, node, dataset, user, action, since_ns, until_ns) "
                     "VALUES (?,?,?,?,?,?,?,?)", (now_ns, hold.reason, hold.node, hold.dataset, hold.user,
                                                  hold.action, hold.since_ns, hold.until_ns))
    added = Hold(int(cur.lastrowid or 0), now_ns, hold.reason, hold.node, hold.dataset, hold.user, hold.action,
                 hold.since_ns, hold.until_ns)
    log.warning("legal hold added", extra={"hold": added.id, "selector": added.selector(), "reason": added.reason})
    return added


def release_hold(db: sqlite3.Connection, hold_id: int, reason: str, now_ns: int) -> Hold:
    row = db.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE id = ?", (hold_id,)).fetchone()
    if row is None:
        raise StoreError(f"no legal hold #{hold_id} in this store (see `logseal hold list --all`)")
    hold = Hold(*row)
    if not hold.active:
        raise StoreError(f"legal hold #{hold_id} was already released at {hold.released_ns} ns")
    db.execute("UPDATE legal_holds SET released_ns = ?, release_reason = ? WHERE id = ? AND released_ns IS NULL",
               (now_ns, reason, hold_id))
    log.warning("legal hold released", extra={"hold": hold_id, "selector": hold.selector(), "reason": reason})
    return Hold(*db.execute(f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE id = ?", (hold_id,)).fetchone())


def hold_matches(db: sqlite3.Connection, hold: Hold) -> tuple[int, list[str]]:
    """(stored events, segments) a hold matches now."""
    where, params = hold.where()
    rows = db.execute(f"SELECT b.segment, COUNT(*) FROM events e JOIN batches b ON b.id = e.batch_id WHERE {where} "
                      "GROUP BY b.segment ORDER BY b.segment", params).fetchall()
    return sum(int(n) for _, n in rows), [str(s) for s, _ in rows]


# --- facts and plan ------------------------------------------------------------------------------


def segment_facts(db: sqlite3.Connection, segments_dir: Path, holds: list[Hold]) -> list[SegmentFacts]:
    """Facts about every segment that still has data (recorded deletions are left out)."""
    recorded = {str(s) for (s,) in db.execute("SELECT segment FROM retention")}
    batches = db.execute("SELECT segment, MIN(id), MAX(id), MAX(received_ns) FROM batches GROUP BY segment "
                         "ORDER BY segment").fetchall()
    last = db.execute("SELECT segment FROM batches ORDER BY id DESC LIMIT 1").fetchone()
    active_from = None if last is None else str(last[0])  # the store appends there (or to a newer file)
    signed = int(db.execute("SELECT COALESCE(MAX(size), 0) FROM checkpoints").fetchone()[0])
    datasets: dict[str, list[tuple[str, int]]] = {}
    counts: dict[str, int] = {}
    for segment, dataset, newest, count in db.execute(
            "SELECT b.segment, COALESCE(e.dataset, ''), "
            "MAX(CASE WHEN e.ts_ns > 0 THEN e.ts_ns ELSE b.received_ns END), COUNT(*) "
            "FROM events e JOIN batches b ON b.id = e.batch_id GROUP BY b.segment, e.dataset"):
        datasets.setdefault(str(segment), []).append((str(dataset), int(newest)))
        counts[str(segment)] = counts.get(str(segment), 0) + int(count)
    held: dict[str, list[int]] = {}
    for hold in holds:
        for segment in hold_matches(db, hold)[1]:
            held.setdefault(segment, []).append(hold.id)
    facts = []
    for segment, first, last_id, received in batches:
        name = str(segment)
        if name in recorded:
            continue
        path = segments_dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            log.error("a segment the index lists is gone without a retention record; not planned (run `logseal "
                      "verify`)", extra={"segment": name})
            continue
        facts.append(SegmentFacts(name, size, int(first), int(last_id), counts.get(name, 0),
                                  tuple(sorted(datasets.get(name, []))), int(received),
                                  active=active_from is not None and name >= active_from,
                                  holds=tuple(held.get(name, [])), checkpointed=int(last_id) <= signed))
    return facts


# --- deletion ------------------------------------------------------------------------------------


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def delete_segment(db: sqlite3.Connection, segments_dir: Path, decision: Decision, key: Ed25519PrivateKey,
                   origin: str, now_ns: int) -> RetentionRecord | None:
    """Record (signed, committed) then unlink one planned segment; None if it must stay after all."""
    name = decision.segment.name
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("SELECT 1 FROM retention WHERE segment = ?", (name,)).fetchone():
            db.execute("ROLLBACK")
            return None
        first, last, count = db.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM batches WHERE segment = ?",
                                        (name,)).fetchone()
        if not count or int(last) - int(first) + 1 != int(count):
            raise StoreError(f"segment {name}: its batches are not one contiguous range in the index; not deleted "
                             "(run `logseal verify`)")
        for hold in read_holds(db):
            where, params = hold.where()
            if db.execute(f"SELECT 1 FROM events e WHERE e.batch_id BETWEEN ? AND ? AND {where} LIMIT 1",
                          [first, last, *params]).fetchone():
                log.info("retention skipped a segment a legal hold now matches",
                         extra={"segment": name, "hold": hold.id})
                db.execute("ROLLBACK")
                return None
        leaves = [merkle.leaf_hash(bytes(h)) for (h,) in
                  db.execute("SELECT hash FROM batches WHERE id BETWEEN ? AND ? ORDER BY id", (first, last))]
        events, first_ns, last_ns = db.execute(
            "SELECT COUNT(*), COALESCE(MIN(ts_ns), 0), COALESCE(MAX(ts_ns), 0) FROM events "
            "WHERE batch_id BETWEEN ? AND ?", (first, last)).fetchone()
        next_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM retention").fetchone()[0])
        unsigned = RetentionRecord(next_id, now_ns, decision.rule, name, int(first), int(last), int(first) - 1,
                                   int(last) - 1, decision.segment.bytes, one_line(decision.reason), "",
                                   int(events), int(first_ns), int(last_ns), leaves_root(leaves))
        record = dataclasses.replace(unsigned, signature=sign_record(unsigned, origin, key))
        db.execute(f"INSERT INTO retention ({RECORD_COLUMNS}) VALUES ({','.join('?' * 15)})", record.as_row())
        db.execute("DELETE FROM events WHERE batch_id BETWEEN ? AND ?", (first, last))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    _unlink(segments_dir / name)
    log.warning("retention deleted a segment", extra={
        "segment": name, "rule": record.rule, "batches": f"{record.first_batch_id}-{record.last_batch_id}",
        "leaves": f"{record.first_leaf}-{record.last_leaf}", "events": record.events, "bytes": record.bytes,
        "record": record.id, "reason": record.note})
    return record


def finish_interrupted(db: sqlite3.Connection, segments_dir: Path) -> list[str]:
    """Unlink segments whose deletion was recorded but not done (a crash between the two steps)."""
    done = []
    for (segment,) in db.execute("SELECT segment FROM retention ORDER BY id").fetchall():
        path = segments_dir / str(segment)
        if path.exists():
            log.warning("finishing an interrupted retention deletion", extra={"segment": str(segment)})
            _unlink(path)
            done.append(str(segment))
    return done


@dataclass
class RunResult:
    plan: Plan
    records: list[RetentionRecord] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    """Segments whose interrupted deletion was completed."""
    dry_run: bool = False


def run_retention(db: sqlite3.Connection, store_dir: Path, policy: RetentionPolicy, key: Ed25519PrivateKey | None,
                  origin: str, now_ns: int, *, dry_run: bool = False) -> RunResult:
    """Plan, and unless `dry_run`, delete what the plan says and record each deletion."""
    ensure_schema(db)
    segments_dir = store_dir / "segments"
    finished = [] if dry_run else finish_interrupted(db, segments_dir)
    the_plan = plan(segment_facts(db, segments_dir, read_holds(db)), policy, now_ns)
    result = RunResult(the_plan, finished=finished, dry_run=dry_run)
    if dry_run:
        return result
    if key is None:
        raise StoreError("no aggregator key to sign retention records with")
    for decision in the_plan.deletions:
        record = delete_segment(db, segments_dir, decision, key, origin, now_ns)
        if record is not None:
            result.records.append(record)
    return result


class HoldWatcher:
    """Logs each legal hold the aggregator sees appear or be released (holds are added by the CLI)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._seen: dict[int, bool] = {}
        self._started = False
        self.active = 0

    def poll(self) -> None:
        holds = read_holds(self.db, include_released=True)
        first, self._started = not self._started, True
        for hold in holds:
            was = self._seen.get(hold.id)
            if was is None and hold.active:
                log.warning("legal hold active" if first else "legal hold added",
                            extra={"hold": hold.id, "selector": hold.selector(), "reason": hold.reason})
            elif was and not hold.active:
                log.warning("legal hold released",
                            extra={"hold": hold.id, "selector": hold.selector(), "reason": hold.release_reason})
            self._seen[hold.id] = hold.active
        self.active = sum(1 for h in holds if h.active)


def deleted_by_rule(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """rule -> (segments, bytes) deleted, from the records."""
    return {str(rule): (int(n), int(b)) for rule, n, b in
            db.execute("SELECT rule, COUNT(*), COALESCE(SUM(bytes), 0) FROM retention GROUP BY rule")}


class RetentionService:
    """The aggregator's side. Planning reads a snapshot on its own read-only connection, off the store
    thread (a full pass over the event index); only the deletions run on the store thread.

    A stale snapshot is safe: segments only ever become sealed, never active again, and each deletion
    re-checks the segment and the holds in its own transaction.
    """

    def __init__(self, db: sqlite3.Connection, store_dir: Path, policy: RetentionPolicy | None,
                 key: Ed25519PrivateKey, origin: str, interval_s: int) -> None:
        self.db = db
        self.store_dir = store_dir
        self.policy = policy
        self.key = key
        self.origin = origin
        self.interval_ns = interval_s * 1_000_000_000
        ensure_schema(db)
        if policy is not None:
            finish_interrupted(db, store_dir / "segments")
        self.reader = connect_index(store_dir / "index.db", readonly=True)
        self.holds = HoldWatcher(self.reader)
        self.holds.poll()
        self.deleted = deleted_by_rule(self.reader)
        self._next_run_ns: int | None = None

    def watch(self, now_ns: int) -> Plan | None:
        """Log hold changes; once `interval_s` has passed since the last run (or start), plan a run."""
        self.holds.poll()
        self.deleted = deleted_by_rule(self.reader)
        if self.policy is None:
            return None
        if self._next_run_ns is None:
            self._next_run_ns = now_ns + self.interval_ns
            return None
        if now_ns < self._next_run_ns:
            return None
        self._next_run_ns = now_ns + self.interval_ns
        return plan(segment_facts(self.reader, self.store_dir / "segments", read_holds(self.reader)), self.policy,
                    now_ns)

    def apply(self, planned: Plan, now_ns: int) -> list[RetentionRecord]:
        """On the store thread: finish interrupted deletions, then delete what was planned."""
        segments_dir = self.store_dir / "segments"
        finish_interrupted(self.db, segments_dir)
        records = []
        for decision in planned.deletions:
            record = delete_segment(self.db, segments_dir, decision, self.key, self.origin, now_ns)
            if record is not None:
                records.append(record)
        if records:
            log.info("retention run deleted segments",
                     extra={"segments": len(records), "bytes": sum(r.bytes for r in records)})
        self.deleted = deleted_by_rule(self.db)
        return records

    def close(self) -> None:
        self.reader.close()
