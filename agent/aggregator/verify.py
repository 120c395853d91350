"""Offline verification of a store: every record, signature, digest, chain link and index row,
and the Merkle log with its signed checkpoints.

Reads only; names each problem with where it is (segment, offset) and which batch it concerns.

The Merkle log is recomputed from the segments (leaf = leaf_hash(batch hash) of each record, in
segment order, which is ingest order). Every checkpoint, the store's own and each in a witness
folder, must verify with the aggregator's public key (`checkpoint-signature`) and name a tree
this store holds: a checkpoint larger than the store (its index) is a `rollback`; a store checkpoint whose root
is not the recomputed root at its size is an `inclusion-failure` (a stored batch under it was
changed, removed or inserted); a witness checkpoint whose root differs is `inconsistent-checkpoints`
(the store forked from what was witnessed). A checkpoint larger than the segments but not than the
index is an `inclusion-failure` (batches under it are missing). Batches after the last checkpoint are reported as
information ("unsealed tail"), not as a problem.

A segment deleted by retention under a trusted signed record (see retention_verify.py) is reported
as information ("deleted by retention policy", with its batch and leaf range); its batches' leaf
hashes come from the index (covered by the record's signed leaves root) so the tree and the
checkpoints still verify, and each stream's chain goes on from its last deleted batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import merkle
from agent.aggregator.enrollment import check_attestation
from agent.aggregator.index_rows import index_rows
from agent.aggregator.retention_verify import Deleted, trusted_deletions
from agent.aggregator.store import StoredCheckpoint, connect_index, read_checkpoints, read_segment
from agent.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from agent.errors import StoreError
from agent.keychain import KEYS_STREAM, EpochChain, read_cert
from agent.keys import load_public_key, load_trusted_keys
from agent.seal import (
    FINDING_OK,
    ChainHead,
    ChainTracker,
    Finding,
    Keyring,
    SealedBatch,
    Verdict,
    key_id_of,
    keyring_from,
    open_payload,
    verify_signature,
)
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
    tree_size: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    info: list[str] = field(default_factory=list)
    deleted: list[Deleted] = field(default_factory=list)
    """Segments deleted by retention under a trusted, signed record."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "ok": self.ok, "batches": self.batches, "events": self.events,
                "problems": [asdict(p) for p in self.problems], "declared_gaps": [asdict(g) for g in self.gaps],
                "tree_size": self.tree_size, "checkpoints": self.checkpoints, "witness_checkpoints": self.witnessed,
                "info": self.info, **self._retention_json()}

    def _retention_json(self) -> dict[str, object]:
        """`deleted_by_retention`, present only for a store that deleted something by retention."""
        if not self.deleted:
            return {}
        return {"deleted_by_retention": [
            {"record": d.record.id, "segment": d.record.segment, "rule": d.record.rule,
             "batches": [d.record.first_batch_id, d.record.last_batch_id],
             "leaves": [d.record.first_leaf, d.record.last_leaf], "events": d.record.events,
             "bytes": d.record.bytes, "time_ns": d.record.time_ns, "note": d.record.note} for d in self.deleted]}


def store_keyring(store_dir: Path, keys_dir: Path | None) -> dict[str, dict[str, Ed25519PublicKey]]:
    """Keys to check signatures with: an external enrolment folder if given, else the store's copies."""
    if keys_dir is not None:
        return keyring_from(load_trusted_keys(keys_dir))
    ring: dict[str, dict[str, Ed25519PublicKey]] = {}
    for path in sorted((store_dir / "keys").glob("*.pub")):
        node, _, key_id = path.stem.rpartition(".")
        ring.setdefault(node, {})[key_id] = load_public_key(path)
    return ring


BAD_ENROLLMENT = "bad-enrollment-record"
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
    Verdict.KEY_EPOCH_MISUSE: "key-epoch-misuse",
    Verdict.KEY_EPOCH_PENDING: "key-epoch-misuse",
}


class _EpochWalk:
    """Re-derives each node's key epochs from its stored batches, in ingest order (agent/keychain.py)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.chains: dict[str, EpochChain] = {}

    def check(self, batch: SealedBatch) -> Finding:
        h = batch.header
        chain = self.chains.get(h.node_id)
        if h.version < 2:
            if chain is not None:
                return Finding(Verdict.KEY_EPOCH_MISUSE, "a version 1 batch after the node's key epochs began")
            return verify_signature(batch, self.keyring)
        if chain is None:
            key = self.keyring.get(h.node_id, {}).get(h.key_id)
            if key is None:
                return verify_signature(batch, self.keyring)  # unknown node or key
            if h.key_epoch != 0:
                return Finding(Verdict.KEY_EPOCH_MISUSE, f"the node's first batch claims epoch {h.key_epoch}; its "
                                                         "chain starts at epoch 0")
            chain = self.chains[h.node_id] = EpochChain({0: key})
        key_or = chain.key_for(h)
        if isinstance(key_or, Finding):
            if key_or.verdict is Verdict.KEY_EPOCH_PENDING:
                return Finding(Verdict.KEY_EPOCH_MISUSE, f"epoch {h.key_epoch} was not certified before this batch "
                                                         f"(current {chain.current})")
            return key_or
        signed = verify_signature(batch, {h.node_id: {h.key_id: key_or}})
        return signed if not signed.ok else chain.place(h)

    def adopt(self, db: sqlite3.Connection, node: str, seq: int) -> str | None:
        """A certifying batch deleted by retention: take the epoch it certified from the index (`node_keys`),
        whose epoch-0 key must be an enrolled one. Returns the info line, or None when there is nothing to take."""
        try:
            row = db.execute("SELECT epoch, public_key, ends FROM node_keys WHERE node=? AND detail=?",
                             (node, f"{KEYS_STREAM}#{seq}")).fetchone()
            first = db.execute("SELECT public_key FROM node_keys WHERE node=? AND epoch=0", (node,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or first is None:
            return None
        enrolled = Ed25519PublicKey.from_public_bytes(bytes(first[0]))
        if key_id_of(enrolled) not in self.keyring.get(node, {}):
            return None
        chain = self.chains.setdefault(node, EpochChain({0: enrolled}))
        epoch = int(row[0])
        if epoch != chain.current + 1:
            return None
        chain.keys[epoch] = Ed25519PublicKey.from_public_bytes(bytes(row[1]))
        chain.ends[epoch - 1] = orjson.loads(row[2])
        return (f"key epoch {epoch} of {node} taken from the index: its certifying batch {KEYS_STREAM}#{seq} was "
                "deleted by retention")

    def certify(self, batch: SealedBatch, body: bytes) -> Finding:
        chain = self.chains.get(batch.header.node_id)
        if chain is None:
            return FINDING_OK
        cert = read_cert(batch.header, body)
        return cert if isinstance(cert, Finding) else chain.certify(batch.header, cert)


def verify_store(store_dir: Path, keys_dir: Path | None = None, witness_dir: Path | None = None,
                 aggregator_pub: Path | None = None) -> Report:
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
    by_identity = {(r[1], r[2], r[3], bytes(r[4])): r for r in rows}
    seen: set[int] = set()
    leaves: list[bytes] = []
    chains: dict[tuple[str, str], ChainTracker] = {}
    epochs = _EpochWalk(keyring)
    last_id = 0

    def add(kind: str, where: str, batch: str, detail: str) -> None:
        report.problems.append(Problem(kind, where, batch, detail))

    try:
        origin_row = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
    except sqlite3.Error:
        origin_row = None
    deleted = trusted_deletions(db, rows, None if origin_row is None else str(origin_row[0]),
                                _aggregator_key(store_dir, aggregator_pub), add)
    covered = {int(r[0]) for d in deleted.values() for r in d.rows}
    for segment_name in sorted({p.name for p in segments_dir.glob("*.seg")} | set(deleted)):
        segment_path = segments_dir / segment_name
        gone = deleted.get(segment_name)
        if gone is not None:
            if not segment_path.exists():
                leaves.extend(gone.leaves())
                for r in gone.rows:  # the chain goes on from the last deleted batch of each stream
                    if r[2] == KEYS_STREAM:
                        adopted = epochs.adopt(db, str(r[1]), int(r[3]))
                        if adopted is not None:
                            report.info.append(adopted)
                    seen.add(r[0])
                    chains.setdefault((r[1], r[2]), ChainTracker()).head = ChainHead(int(r[3]), bytes(r[4]))
                    last_id = max(last_id, int(r[0]))
                report.deleted.append(gone)
                report.info.append(gone.describe())
                continue
            report.info.append(f"retention record #{gone.record.id}: segment {segment_name} is still present (its "
                               "deletion was interrupted; the next retention run finishes it)")
        for record in read_segment(segment_path):
            where = f"{record.segment}@{record.offset}"
            row = by_location.get((record.segment, record.offset))
            named = f"{row[1]}/{row[2]}#{row[3]}" if row else ""
            if record.problem:
                add("modified", where, named, record.problem)
                if row:
                    leaves.append(merkle.leaf_hash(bytes(row[4])))
                continue
            if not record.crc_ok:
                add("modified", where, named, "record checksum mismatch: the stored bytes were changed")
            try:
                batch = batch_from_bytes(record.data)
            except WireError as exc:
                add("modified", where, named, str(exc))
                if row:
                    seen.add(row[0])
                    leaves.append(merkle.leaf_hash(bytes(row[4])))
                continue
            leaves.append(merkle.leaf_hash(batch.batch_hash))
            h = batch.header
            name = f"{h.node_id}/{h.stream_id}#{h.seq}"
            same = by_identity.get((h.node_id, h.stream_id, h.seq, batch.batch_hash))
            if same is not None and same is not row and same[0] not in seen:
                row = same  # an indexed batch found at another place (records before it were removed)
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
            finding = epochs.check(batch)
            if not finding.ok:
                add(_KIND_BY_VERDICT[finding.verdict], where, name, str(finding))
            opened = open_payload(batch) if not batch.payload_dropped else None
            if finding.ok and h.next_key and opened is not None and opened.body is not None:
                certified = epochs.certify(batch, opened.body)
                if not certified.ok:
                    add(_KIND_BY_VERDICT[certified.verdict], where, name, str(certified))
            if batch.payload_dropped and batch.payload:
                add("modified", where, name, "a batch marked as dropped carries a payload")
            if opened is not None and not opened.finding.ok:
                add(_KIND_BY_VERDICT[opened.finding.verdict], where, name, str(opened.finding))
            link = chains.setdefault((h.node_id, h.stream_id), ChainTracker()).observe(h, batch.batch_hash)
            if not link.ok:
                add(_KIND_BY_VERDICT[link.verdict], where, name, str(link))
            if row is not None and row[0] not in covered and (
                    batch.payload_dropped or (opened is not None and opened.body is not None)):
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
    _check_equivocations(db, keyring, add)
    origin = str(origin_row[0]) if origin_row is not None else next(
        (_origin_of(cp.note) for cp in read_checkpoints(db)), None)
    _check_enrollments(db, origin, _aggregator_key(store_dir, aggregator_pub), keyring, add, report.info)
    try:
        stored = read_checkpoints(db)
    except sqlite3.Error:  # a store from before the Merkle log
        stored = []
    db.close()
    witnessed = _read_witness(witness_dir) if witness_dir is not None else []
    origin = None if origin_row is None else str(origin_row[0])
    _check_log(report, store_dir, leaves, len(rows), stored, origin, witnessed, aggregator_pub, add)
    return report


def _aggregator_key(store_dir: Path, aggregator_pub: Path | None) -> Ed25519PublicKey | None:
    path = aggregator_pub if aggregator_pub is not None else store_dir / "aggregator.pub"
    return load_public_key(path) if aggregator_pub is not None or path.exists() else None


def _check_enrollments(db: sqlite3.Connection, origin: str | None, aggregator: Ed25519PublicKey | None,
                       keyring: dict[str, dict[str, Ed25519PublicKey]], add: Callable[[str, str, str, str], None],
                       info: list[str]) -> None:
    """Each node's epoch-0 key as enrolled: signed by the aggregator over exactly these columns, and the
    key the node's batches verify with."""
    try:
        rows = db.execute("SELECT k.node, k.key_id, k.public_key, k.how, k.detail, e.attestation FROM node_keys k "
                          "LEFT JOIN enrollments e ON e.node = k.node WHERE k.epoch = 0 ORDER BY k.node").fetchall()
    except sqlite3.Error:
        return
    for node, key_id, public_key, how, detail, attestation in rows:
        where = f"enrollment of {node}"
        if node in keyring and key_id not in keyring[node]:
            add(BAD_ENROLLMENT, where, "", f"the enrolled key {key_id} is not a key the node's batches verify with")
        if not attestation:
            if aggregator is not None:
                info.append(f"{where} ({how}) carries no aggregator attestation (enrolled without an aggregator key)")
            continue
        if aggregator is None or origin is None:
            info.append(f"{where}: attestation not checked (no aggregator public key or origin)")
            continue
        try:
            check_attestation(origin, aggregator, str(node), bytes(public_key), str(how), str(detail),
                              str(attestation))
        except CheckpointError as exc:
            add(BAD_ENROLLMENT, where, "", f"the aggregator's attestation does not match this enrollment: {exc}")


def _check_equivocations(db: sqlite3.Connection, keyring: dict[str, dict[str, Ed25519PublicKey]],
                         add: Callable[[str, str, str, str], None]) -> None:
    try:
        rows = db.execute("SELECT id, node, stream, seq, stored_hash, hash, batch FROM equivocations "
                          "ORDER BY id").fetchall()
    except sqlite3.Error:
        return
    for eid, node, stream, seq, stored_hash, new_hash, raw in rows:
        detail = (f"the node signed two different batches for this seq (stored {bytes(stored_hash).hex()[:16]}, "
                  f"also received {bytes(new_hash).hex()[:16]}); the second is kept as evidence")
        try:
            finding = verify_signature(batch_from_bytes(bytes(raw)), keyring)
        except WireError as exc:
            detail += f"; but the evidence is not a batch: {exc}"
        else:
            if not finding.ok:
                detail += f"; but the evidence's signature does not verify: {finding}"
        add("equivocation", f"equivocations#{eid}", f"{node}/{stream}#{seq}", detail)


def _read_witness(directory: Path) -> list[tuple[str, str]]:
    """(file name, note text) of every checkpoint file in a witness folder."""
    if not directory.is_dir():
        raise StoreError(f"--witness {directory}: not a directory")
    try:
        return [(p.name, p.read_text(errors="replace")) for p in sorted(directory.glob("*.checkpoint"))]
    except OSError as exc:
        raise StoreError(f"--witness {directory}: cannot read: {exc.strerror}") from None


def _origin_of(note: str) -> str:
    return note.partition("\n")[0]


def _check_log(report: Report, store_dir: Path, leaves: list[bytes], indexed: int, stored: list[StoredCheckpoint],
               origin: str | None, witnessed: list[tuple[str, str]], aggregator_pub: Path | None,
               add: Callable[[str, str, str, str], None]) -> None:
    report.tree_size = len(leaves)
    report.checkpoints = len(stored)
    report.witnessed = len(witnessed)
    pub_path = aggregator_pub if aggregator_pub is not None else store_dir / "aggregator.pub"
    if aggregator_pub is not None or pub_path.exists():
        public_key: Ed25519PublicKey | None = load_public_key(pub_path)
    else:
        public_key = None
        if stored or witnessed:
            add("checkpoint-signature", str(pub_path), "", "no aggregator public key to check the checkpoints "
                                                           "with (give --aggregator-pub FILE)")

    def opened(note: str, where: str) -> Checkpoint | None:
        if public_key is None:
            return None
        try:
            return open_checkpoint(note, _origin_of(note), public_key)
        except CheckpointError as exc:
            add("checkpoint-signature", where, "", f"the checkpoint does not verify with the aggregator key: {exc}")
            return None

    good: list[tuple[str, Checkpoint, bool]] = []  # (where, checkpoint, from the witness)
    previous: Checkpoint | None = None
    for i, row in enumerate(stored, 1):
        where = f"checkpoint #{i} (size {row.size})"
        cp = opened(row.note, where)
        if cp is None:
            continue
        if (cp.size, cp.root) != (row.size, row.root):
            add("index-mismatch", where, "", f"the checkpoint row says size {row.size}, the signed note {cp.size}")
        if origin is not None and cp.origin != origin:
            add("inconsistent-checkpoints", where, "", f"signed for log {cp.origin!r}, the store's log is {origin!r}")
        if previous is not None and cp.size < previous.size:
            add("inconsistent-checkpoints", where, "", f"signed a tree of {cp.size} batches after one of "
                                                       f"{previous.size}")
        previous = cp
        good.append((where, cp, False))
    for name, note in witnessed:
        where = f"witness {name}"
        cp = opened(note, where)
        if cp is None:
            continue
        if origin is not None and cp.origin != origin:
            report.info.append(f"{where}: a checkpoint of another log ({cp.origin!r}), not checked")
            continue
        good.append((where, cp, True))
    own = {(cp.size, cp.root) for _, cp, witness in good if not witness}
    good = [g for g in good if not (g[2] and (g[1].size, g[1].root) in own)]  # witnessed = already checked
    roots = _roots_at(leaves, {cp.size for _, cp, _ in good if cp.size <= len(leaves)})
    for where, cp, witness in good:
        if cp.size > indexed:
            add("rollback", where, "", f"a checkpoint of {cp.size} batches was signed, the store holds "
                                       f"{indexed}: batches were removed from its end")
        elif cp.size > len(leaves):
            add("inclusion-failure", where, "", f"a checkpoint of {cp.size} batches was signed, the segments hold "
                                                f"{len(leaves)}: batches under it are missing")
        elif roots[cp.size] != cp.root:
            if witness:
                add("inconsistent-checkpoints", where, "", f"the store's tree of {cp.size} batches has another "
                                                           "root than the witnessed checkpoint: the store forked")
            else:
                add("inclusion-failure", where, "", f"the root of the store's first {cp.size} batches is not the "
                                                    "signed root: a batch under this checkpoint was changed, "
                                                    "removed or inserted")
    sealed = max((cp.size for _, cp, witness in good if not witness), default=0)
    if len(leaves) > sealed:
        report.info.append(f"unsealed tail: {len(leaves) - sealed} batch(es) after the last checkpoint "
                           f"(size {sealed}); a later checkpoint will cover them")


def _roots_at(leaves: list[bytes], sizes: set[int]) -> dict[int, bytes]:
    """The Merkle root of the first `size` leaves for each size, in one pass."""
    roots = {0: merkle.EMPTY_ROOT} if 0 in sizes else {}
    state = merkle.MerkleState()
    for leaf in leaves:
        state.append(leaf)
        if state.size in sizes:
            roots[state.size] = state.root()
    return roots
