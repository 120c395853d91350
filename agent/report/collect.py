"""The compliance report's I/O shell: reads a store, its alerts file and its verification into a `Summary`.

Reads only. Events come from the index (time window) and the stored batches; a batch whose payload
cannot be read or whose node signature does not verify (tampered, truncated) is listed as unreadable
and its events are not counted, never fatal: a damaged store still gets its report, and the
verification section (`agent.aggregator.verify`) says what is wrong.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.aggregator.store import connect_index, read_record
from agent.aggregator.verify import store_keyring, verify_store
from agent.errors import StoreError
from agent.report.summary import (
    NO_RETENTION,
    Retention,
    Summary,
    SummaryBuilder,
    Window,
    make_window,
    retention_from,
    verification_from,
)
from agent.seal import Keyring, open_payload, verify_signature
from agent.wire import WireError, batch_from_bytes

DEFAULT_ALERTS_FILE = "alerts.jsonl"
"""Where the aggregator writes alerts when `[detect] alerts_file` is not set (agent.aggregator.detection)."""


@dataclass(frozen=True)
class ReportRequest:
    store: Path
    since_ns: int
    until_ns: int
    now_ns: int
    alerts: Path | None = None  # None: STORE/alerts.jsonl when it exists
    keys: Path | None = None
    witness: Path | None = None
    aggregator_pub: Path | None = None


def build_summary(req: ReportRequest) -> Summary:
    index_path = req.store / "index.db"
    if not index_path.is_file() or not (req.store / "segments").is_dir():
        raise StoreError(f"{req.store} is not a logseal store (no index.db and segments/); give the aggregator's "
                         "store_dir")
    verification = verification_from(verify_store(req.store, req.keys, req.witness, req.aggregator_pub))
    window = make_window(req.since_ns, req.until_ns)
    builder = SummaryBuilder(str(req.store), window, req.now_ns)
    try:
        db = connect_index(index_path, readonly=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the index of {req.store}: {exc}") from None
    try:
        keyring = store_keyring(req.store, req.keys)
        _events(db, req.store, req.since_ns, req.until_ns, keyring, builder)
        _dropped(db, req.store, req.since_ns, req.until_ns, builder)
        for node, received_ns in db.execute("SELECT node, received_ns FROM batches WHERE received_ns >= ? AND "
                                            "received_ns < ? ORDER BY node, received_ns", (req.since_ns, req.until_ns)):
            builder.add_receipt(str(node), int(received_ns))
        for (verdict,) in db.execute("SELECT verdict FROM rejections WHERE received_ns >= ? AND received_ns < ?",
                                     (req.since_ns, req.until_ns)):
            builder.add_rejection(str(verdict))
        retention = _retention(db, window)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the index of {req.store}: {exc}") from None
    finally:
        db.close()
    source, note = _alerts(req, builder)
    return builder.build(verification, retention, source, note)


def _events(db: sqlite3.Connection, store: Path, since_ns: int, until_ns: int, keyring: Keyring,
            builder: SummaryBuilder) -> None:
    rows = db.execute(
        "SELECT e.batch_id, e.idx, e.ts_ns, b.node, b.stream, b.seq, b.segment, b.offset, b.length "
        "FROM events e JOIN batches b ON b.id = e.batch_id WHERE e.ts_ns >= ? AND e.ts_ns < ? "
        "ORDER BY e.batch_id, e.idx", (since_ns, until_ns))
    current = -1
    pending: list[tuple[int, int]] = []
    meta: tuple[str, str, str, int, int] = ("", "", "", 0, 0)

    def flush() -> None:
        if not pending:
            return
        node, name, segment, offset, length = meta
        body, reason = _payload(store / "segments" / segment, offset, length, keyring)
        if body is None:
            builder.add_unreadable(node, name, len(pending), reason)
            return
        events: list[tuple[int, dict[str, Any]]] = []
        try:
            for idx, ts_ns in pending:
                event = orjson.loads(body[idx])
                if not isinstance(event, dict):
                    raise ValueError("an event is not a JSON object")
                events.append((ts_ns, event))
        except (IndexError, ValueError) as exc:
            builder.add_unreadable(node, name, len(pending), f"payload does not match the index: {exc}")
            return
        for ts_ns, event in events:
            builder.add_event(node, ts_ns, event)

    for batch_id, idx, ts_ns, node, stream, seq, segment, offset, length in rows:
        if batch_id != current:
            flush()
            pending = []
            current = batch_id
            meta = (str(node), f"{node}/{stream}#{seq}", str(segment), int(offset), int(length))
        pending.append((int(idx), int(ts_ns)))
    flush()


def _payload(path: Path, offset: int, length: int, keyring: Keyring) -> tuple[list[bytes] | None, str]:
    """The batch's event lines, or None and why they cannot be read or trusted (its node's signature)."""
    try:
        raw = read_record(path, offset, length)
        batch = batch_from_bytes(raw)
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror}"
    except WireError as exc:
        return None, f"{path.name}@{offset}: {exc}"
    signed = verify_signature(batch, keyring)
    if not signed.ok:
        return None, f"{path.name}@{offset}: {signed}"
    opened = open_payload(batch)
    if opened.body is None:
        return None, f"{path.name}@{offset}: {opened.finding}"
    return (opened.body.split(b"\n") if opened.body else []), ""


def _dropped(db: sqlite3.Connection, store: Path, since_ns: int, until_ns: int, builder: SummaryBuilder) -> None:
    for node, stream, seq, segment, offset, length, first_ns in db.execute(
            "SELECT node, stream, seq, segment, offset, length, first_ns FROM batches WHERE dropped = 1 "
            "AND first_ns >= ? AND first_ns < ? ORDER BY first_ns", (since_ns, until_ns)):
        try:
            count = batch_from_bytes(read_record(store / "segments" / segment, offset, length)).header.event_count
        except (OSError, WireError):
            count = 0  # verification names the damaged record
        builder.add_dropped_batch(str(node), f"{node}/{stream}#{seq}", int(first_ns), int(count))


def _retention(db: sqlite3.Connection, window: Window) -> Retention:
    """The `retention` table's rows when the store has one (older stores do not)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'retention'").fetchone() is None:
        return NO_RETENTION
    cur = db.execute("SELECT * FROM retention")
    names = [d[0] for d in cur.description]
    return retention_from((dict(zip(names, row, strict=True)) for row in cur), window)


def _alerts(req: ReportRequest, builder: SummaryBuilder) -> tuple[str | None, str]:
    path = req.alerts
    if path is None:
        path = req.store / DEFAULT_ALERTS_FILE
        if not path.is_file():
            return None, (f"no alerts file given (none at {path}, where the aggregator writes them unless "
                          "[detect] alerts_file names another; give --alerts FILE)")
    try:
        with path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    doc = None
                builder.add_alert(doc)
    except OSError as exc:
        raise StoreError(f"--alerts {path}: cannot read: {exc.strerror}") from None
    return str(path), ""
