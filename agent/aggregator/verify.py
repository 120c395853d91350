"""Offline verification of a store: every record, signature, digest, chain link and index row.

Reads only; names each problem with where it is (segment, offset) and which batch it concerns.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.aggregator.index_rows import index_rows
from agent.aggregator.store import connect_index, read_segment
from agent.errors import StoreError
from agent.keys import load_public_key, load_trusted_keys
from agent.seal import ChainTracker, Verdict, keyring_from, open_payload, verify_signature
from agent.wire import WireError, batch_from_bytes


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    batch: str
    detail: str

    def __str__(self) -> str:
        batch = f" batch {self.batch}" if self.batch else ""
        return f"{self.kind}: {self.where}{batch}: {self.detail}"


@dataclass(frozen=True)
class DeclaredGap:
    """Loss the node declared and signed (a gap record, or a batch whose payload it dropped)."""

    where: str
    batch: str
    detail: str

    def __str__(self) -> str:
        return f"declared gap: {self.where} batch {self.batch}: {self.detail}"


@dataclass
class Report:
    store: str
    batches: int = 0
    events: int = 0
    problems: list[Problem] = field(default_factory=list)
    gaps: list[DeclaredGap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "ok": self.ok, "batches": self.batches, "events": self.events,
                "problems": [asdict(p) for p in self.problems], "declared_gaps": [asdict(g) for g in self.gaps]}


def store_keyring(store_dir: Path, keys_dir: Path | None) -> dict[str, dict[str, Ed25519PublicKey]]:
    """Keys to check signatures with: an external enrolment folder if given, else the store's copies."""
    if keys_dir is not None:
        return keyring_from(load_trusted_keys(keys_dir))
    ring: dict[str, dict[str, Ed25519PublicKey]] = {}
    for path in sorted((store_dir / "keys").glob("*.pub")):
        node, _, key_id = path.stem.rpartition(".")
        ring.setdefault(node, {})[key_id] = load_public_key(path)
    return ring


_KIND_BY_VERDICT = {
    Verdict.BAD_SIGNATURE: "bad-signature",
    Verdict.UNKNOWN_KEY: "unknown-key",
    Verdict.UNKNOWN_NODE: "unknown-key",
    Verdict.DIGEST_MISMATCH: "modified",
    Verdict.TRUNCATED_PAYLOAD: "modified",
    Verdict.CORRUPT_PAYLOAD: "modified",
    Verdict.LENGTH_MISMATCH: "modified",
    Verdict.EVENT_COUNT_MISMATCH: "modified",
    Verdict.DECOMPRESSION_LIMIT: "modified",
    Verdict.MALFORMED: "modified",
    Verdict.UNSUPPORTED_VERSION: "modified",
    Verdict.SEQ_GAP: "missing",
    Verdict.CHAIN_BROKEN: "modified",
    Verdict.REPLAYED: "replayed",
    Verdict.REORDERED: "reordered",
    Verdict.FORKED: "inserted",
}


def verify_store(store_dir: Path, keys_dir: Path | None = None) -> Report:
    index_path = store_dir / "index.db"
    segments_dir = store_dir / "segments"
    if not index_path.is_file() or not segments_dir.is_dir():
        raise StoreError(f"{store_dir} is not a logseal store (no index.db and segments/)")
    keyring = store_keyring(store_dir, keys_dir)
    report = Report(store=str(store_dir))
    try:
        db = connect_index(index_path, readonly=True)
        rows = db.execute("SELECT id, node, stream, seq, hash, segment, offset, length, event_count "
                          "FROM batches ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the index of {store_dir}: {exc}") from None
    by_location = {(r[5], r[6]): r for r in rows}
    seen: set[int] = set()
    chains: dict[tuple[str, str], ChainTracker] = {}
    last_id = 0

    def add(kind: str, where: str, batch: str, detail: str) -> None:
        report.problems.append(Problem(kind, where, batch, detail))

    for segment_path in sorted(segments_dir.glob("*.seg")):
        for record in read_segment(segment_path):
            where = f"{record.segment}@{record.offset}"
            row = by_location.get((record.segment, record.offset))
            named = f"{row[1]}/{row[2]}#{row[3]}" if row else ""
            if record.problem:
                add("modified", where, named, record.problem)
                continue
            if not record.crc_ok:
                add("modified", where, named, "record checksum mismatch: the stored bytes were changed")
            try:
                batch = batch_from_bytes(record.data)
            except WireError as exc:
                add("modified", where, named, str(exc))
                if row:
                    seen.add(row[0])
                continue
            h = batch.header
            name = f"{h.node_id}/{h.stream_id}#{h.seq}"
            report.batches += 1
            if batch.payload_dropped:
                report.gaps.append(DeclaredGap(where, name, f"payload of {h.event_count} events dropped by the node "
                                                            "(spool full)"))
            else:
                report.events += h.event_count
            if row is None:
                add("inserted", where, name, "record is not in the index (not stored by the aggregator)")
            else:
                seen.add(row[0])
                if row[0] < last_id:
                    add("reordered", where, name, f"ingest index {row[0]} comes after {last_id} in the segments")
                last_id = max(last_id, row[0])
                if (row[1], row[2], row[3], bytes(row[4]), row[7]) != (h.node_id, h.stream_id, h.seq,
                                                                        batch.batch_hash, len(record.data)):
                    add("modified", where, name, f"index says batch {named} but the record holds {name}")
            finding = verify_signature(batch, keyring)
            if not finding.ok:
                add(_KIND_BY_VERDICT[finding.verdict], where, name, str(finding))
            opened = open_payload(batch) if not batch.payload_dropped else None
            if batch.payload_dropped and batch.payload:
                add("modified", where, name, "a batch marked as dropped carries a payload")
            if opened is not None and not opened.finding.ok:
                add(_KIND_BY_VERDICT[opened.finding.verdict], where, name, str(opened.finding))
            link = chains.setdefault((h.node_id, h.stream_id), ChainTracker()).observe(h, batch.batch_hash)
            if not link.ok:
                add(_KIND_BY_VERDICT[link.verdict], where, name, str(link))
            if row is not None and (batch.payload_dropped or (opened is not None and opened.body is not None)):
                body = opened.body if opened is not None and opened.body is not None else b""
                expected = index_rows(body)
                for index_row in expected:
                    if index_row[2] == "logseal.gap":
                        report.gaps.append(DeclaredGap(where, name, f"gap record at event {index_row[0]}"))
                indexed = db.execute("SELECT idx, ts_ns, dataset, user, action FROM events WHERE batch_id=? "
                                     "ORDER BY idx", (row[0],)).fetchall()
                if [tuple(r) for r in indexed] != expected:
                    add("index-mismatch", where, name,
                        f"index rows for this batch differ from its payload ({len(indexed)} rows, "
                        f"{len(expected)} events)")
    for r in rows:
        if r[0] not in seen:
            add("missing", f"{r[5]}@{r[6]}", f"{r[1]}/{r[2]}#{r[3]}",
                "the index lists this batch but no record is at that place")
    db.close()
    return report
