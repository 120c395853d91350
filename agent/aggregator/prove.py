"""`logseal prove`: an evidence bundle for one stored event, read from a store without changing it.

The batch is read exactly as stored (the bytes the node signed), the node's public keys are the
store's copies (`STORE/keys/<node>.<key_id>.pub`), and the inclusion proof is against the latest
signed checkpoint whose tree holds the batch. See `agent/bundle.py` for the bundle's format.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent import merkle
from agent.aggregator.store import connect_index, read_record
from agent.bundle import BundleError, build_bundle
from agent.errors import LogsealError, StoreError
from agent.keychain import KEYS_STREAM


def parse_event_id(event_id: str) -> tuple[str, str, int, int]:
    """`node:stream:seq:index` into its parts."""
    parts = event_id.split(":")
    if len(parts) != 4 or not parts[0] or not parts[1] or not parts[2].isdigit() or not parts[3].isdigit():
        raise LogsealError(f"--event-id {event_id!r}: an event id is node:stream:seq:index (see event.id)")
    return parts[0], parts[1], int(parts[2]), int(parts[3])


def _refuse_if_deleted(db: sqlite3.Connection, event_id: str, segment: str) -> None:
    try:
        row = db.execute("SELECT id, rule FROM retention WHERE segment = ?", (segment,)).fetchone()
    except sqlite3.OperationalError:  # a store that never ran retention
        return
    if row is not None:
        raise LogsealError(f"event {event_id}: its segment {segment} was deleted by retention (rule {row[1]}, "
                           f"signed record #{row[0]}); `logseal verify` shows the record")


def prove_event(store_dir: Path, event_id: str) -> dict[str, Any]:
    node, stream, seq, _ = parse_event_id(event_id)
    index = store_dir / "index.db"
    if not index.is_file():
        raise StoreError(f"{store_dir} is not a logseal store (no index.db)")
    db = connect_index(index, readonly=True)
    try:
        row = db.execute("SELECT id, segment, offset, length FROM batches WHERE node=? AND stream=? AND seq=?",
                         (node, stream, seq)).fetchone()
        if row is None:
            raise LogsealError(f"event {event_id}: no batch {node}/{stream}#{seq} in {store_dir}")
        batch_id, segment, offset, length = int(row[0]), str(row[1]), int(row[2]), int(row[3])
        cp = db.execute("SELECT size, note FROM checkpoints WHERE size >= ? ORDER BY id DESC LIMIT 1",
                        (batch_id,)).fetchone()
        if cp is None:
            raise LogsealError(f"event {event_id}: its batch is not yet under a signed checkpoint; the aggregator "
                               "signs one every checkpoint_interval_s, and at shutdown")
        size, note = int(cp[0]), str(cp[1])
        _refuse_if_deleted(db, event_id, segment)
        leaves = [merkle.leaf_hash(bytes(h)) for (h,) in
                  db.execute("SELECT hash FROM batches WHERE id <= ? ORDER BY id", (size,))]
        certificates = db.execute("SELECT segment, offset, length FROM batches WHERE node=? AND stream=? AND id <= ? "
                                  "ORDER BY seq", (node, KEYS_STREAM, size)).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the index of {store_dir}: {exc}") from None
    finally:
        db.close()
    try:
        batch_bytes = read_record(store_dir / "segments" / segment, offset, length)
        chain = [read_record(store_dir / "segments" / str(s), int(o), int(n)) for s, o, n in certificates
                 if (store_dir / "segments" / str(s)).exists()]
        if len(chain) != len(certificates):
            chain = []  # retention deleted a certificate: the chain cannot be shown from epoch 0
    except OSError as exc:
        raise StoreError(f"cannot read segment {segment}: {exc.strerror}") from None
    keys = [p.read_text() for p in sorted((store_dir / "keys").glob(f"{node}.*.pub"))]
    try:
        return build_bundle({"event": {"id": event_id}}, batch_bytes, keys, batch_id - 1, size,
                            merkle.inclusion_proof(leaves, batch_id - 1, size), note, chain)
    except BundleError as exc:
        raise LogsealError(f"event {event_id}: {exc}") from None
