"""The aggregator's store: append-only segment files of batches exactly as received, plus an index.

Design constraints:
- Segments hold records `LSREC` | u32 length | batch bytes as received | u32 CRC32; a segment
  starts with an 8-byte versioned header. Nothing in a segment is ever rewritten.
- A batch is durable once its record is fsynced AND its index rows are committed; only then is
  it acked. On open, bytes past the last indexed record (never acked) are cut off and logged.
- The chain head of each (node, stream) is the indexed batch with the highest seq: derived from
  the index, never kept twice.
- Every stored batch is a leaf `merkle.leaf_hash(batch_hash)` of one RFC 6962 tree, in ingest
  order: leaf index = `batches.id - 1`. The tree's O(log n) append state (`merkle` row) is written
  in the same SQLite transaction as the batch row, so a crash can never leave them apart.
- Equivocation evidence (a batch signed for a (node, stream, seq) already stored with another hash)
  is kept in `equivocations` with its raw bytes; it never replaces the stored batch.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import merkle
from agent.aggregator.epochs import SCHEMA as EPOCH_SCHEMA
from agent.aggregator.epochs import (
    Boot,
    EpochRecord,
    EpochRecords,
    sqlite_boot,
    sqlite_enrol,
    sqlite_epoch_records,
    sqlite_statements,
)
from agent.aggregator.index_rows import IndexRow
from agent.aggregator.retention_records import RETENTION_SCHEMA
from agent.durable import fsync_dir
from agent.errors import StoreError
from agent.seal import GENESIS, BatchHeader, ChainHead, SealedBatch
from agent.wire import batch_from_bytes

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
SEGMENT_HEADER = b"LSSEG\x00\x00\x01"
RECORD_MAGIC = b"LSREC"
_RECORD_HEAD = struct.Struct(">5sI")
_RECORD_TAIL = struct.Struct(">I")
RECORD_OVERHEAD = _RECORD_HEAD.size + _RECORD_TAIL.size

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,          -- ingest order, from 1
    node TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    hash BLOB NOT NULL, segment TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    event_count INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0,  -- 1: the agent dropped the payload (spool full)
    UNIQUE (node, stream, seq)
);
CREATE TABLE IF NOT EXISTS events (
    batch_id INTEGER NOT NULL, idx INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    node TEXT NOT NULL, dataset TEXT, user TEXT, action TEXT,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ns);
CREATE INDEX IF NOT EXISTS events_node ON events (node, ts_ns);
CREATE INDEX IF NOT EXISTS events_user ON events (user, ts_ns);
CREATE INDEX IF NOT EXISTS events_action ON events (action, ts_ns);
CREATE INDEX IF NOT EXISTS events_dataset ON events (dataset, ts_ns);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY, received_ns INTEGER NOT NULL, peer TEXT, node TEXT, stream TEXT,
    seq INTEGER, verdict TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merkle (  -- one row: the tree's append state after the last batch
    id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (  -- signed tree heads, in signing order
    id INTEGER PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
    time_ns INTEGER NOT NULL, state BLOB NOT NULL  -- state: the Merkle append state at `size`
);
CREATE TABLE IF NOT EXISTS equivocations (  -- a second, different batch for a stored (node, stream, seq)
    id INTEGER PRIMARY KEY, received_ns INTEGER NOT NULL, peer TEXT, node TEXT NOT NULL,
    stream TEXT NOT NULL, seq INTEGER NOT NULL, stored_hash BLOB NOT NULL, hash BLOB NOT NULL,
    batch BLOB NOT NULL, UNIQUE (node, stream, seq, hash)
);
"""


@dataclass(frozen=True, slots=True)
class BatchLocation:
    id: int
    node: str
    stream: str
    seq: int
    hash: bytes
    segment: str
    offset: int
    length: int
    event_count: int


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    time_ns: int
    state: bytes


def read_checkpoints(db: sqlite3.Connection) -> list[StoredCheckpoint]:
    """Every checkpoint the store signed, in signing order."""
    return [StoredCheckpoint(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bytes(r[4])) for r in db.execute(
        "SELECT size, root, note, time_ns, state FROM checkpoints ORDER BY id")]


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    segment: str
    offset: int
    data: bytes
    crc_ok: bool
    problem: str = ""


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def connect_index(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


def read_record(path: Path, offset: int, length: int) -> bytes:
    """The batch bytes of the record at `offset` (as located by the index)."""
    with path.open("rb") as f:
        f.seek(offset + _RECORD_HEAD.size)
        return f.read(length)


def read_segment(path: Path) -> Iterator[SegmentRecord]:
    """Every record of a segment in order; framing problems are reported, not raised."""
    data = path.read_bytes()
    name = path.name
    if not data.startswith(SEGMENT_HEADER):
        yield SegmentRecord(name, 0, b"", False, "segment header is missing or of an unknown version")
        return
    pos = len(SEGMENT_HEADER)
    while pos < len(data):
        if len(data) - pos < RECORD_OVERHEAD:
            yield SegmentRecord(name, pos, b"", False, f"{len(data) - pos} trailing bytes, not a record")
            return
        magic, length = _RECORD_HEAD.unpack_from(data, pos)
        end = pos + _RECORD_HEAD.size + length
        if magic != RECORD_MAGIC or end + _RECORD_TAIL.size > len(data):
            yield SegmentRecord(name, pos, b"", False, "record framing is damaged; the rest of the "
                                                       "segment cannot be read")
            return
        body = data[pos + _RECORD_HEAD.size:end]
        (crc,) = _RECORD_TAIL.unpack_from(data, end)
        yield SegmentRecord(name, pos, body, zlib.crc32(body) == crc)
        pos = end + _RECORD_TAIL.size


def _is_unacked_tail(tail: bytes) -> bool:
    """True if `tail` can only be one record whose write the store never acknowledged."""
    if len(tail) < _RECORD_HEAD.size:
        return True
    magic, length = _RECORD_HEAD.unpack_from(tail)
    if magic != RECORD_MAGIC:
        return not tail.strip(b"\x00")  # space allocated by a torn write, never written
    return len(tail) <= _RECORD_HEAD.size + int(length) + _RECORD_TAIL.size


class Store:
    """Single-writer store; the ingest service calls it from one thread."""

    def __init__(self, directory: Path, segment_max_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.segments_dir = directory / "segments"
        self.segment_max_bytes = segment_max_bytes
        try:
            self.segments_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = connect_index(directory / "index.db")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {directory}: {exc}") from None
        self.db.executescript(_SCHEMA)
        self.db.executescript(EPOCH_SCHEMA)  # `node_keys` and `node_boots` (aggregator/epochs.py)
        self.db.executescript(RETENTION_SCHEMA)  # `retention` and `legal_holds`, read by reports even when empty
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(STORE_FORMAT_VERSION),))
        version = self.db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0]
        if version != str(STORE_FORMAT_VERSION):
            raise StoreError(f"store {directory} has format version {version}; this build reads "
                             f"{STORE_FORMAT_VERSION}")
        self._heads: dict[tuple[str, str], ChainHead] = {}
        self._open_active_segment()
        self.tree = self._load_tree()

    def _load_tree(self) -> merkle.MerkleState:
        """The Merkle append state, built once from the index for a store that predates it."""
        count = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0])
        row = self.db.execute("SELECT size, state FROM merkle WHERE id = 1").fetchone()
        if row is not None:
            try:
                tree = merkle.MerkleState.from_bytes(bytes(row[1]))
            except merkle.MerkleError as exc:
                raise StoreError(f"store {self.directory}: the Merkle state is damaged ({exc}); "
                                 "run `logseal verify` on it") from None
            if tree.size != count or int(row[0]) != count:
                raise StoreError(f"store {self.directory}: the Merkle state covers {int(row[0])} (frontier: "
                                 f"{tree.size}) batches but the index holds {count}; run `logseal verify` on it")
            return tree
        tree = merkle.MerkleState()
        tree.extend(merkle.leaf_hash(bytes(h)) for (h,) in self.db.execute("SELECT hash FROM batches ORDER BY id"))
        if tree.size != count:
            raise StoreError(f"store {self.directory}: batch ids are not 1..{count}; run `logseal verify` on it")
        self.db.execute("INSERT INTO merkle VALUES (1, ?, ?)", (tree.size, tree.to_bytes()))
        if count:
            log.info("built the Merkle log of an existing store", extra={"batches": count})
        return tree

    def leaf_hashes(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Leaf hashes of leaves start..stop-1 (ingest order), from the index."""
        end = self.tree.size if stop is None else stop
        return [merkle.leaf_hash(bytes(h)) for (h,) in self.db.execute(
            "SELECT hash FROM batches WHERE id > ? AND id <= ? ORDER BY id", (start, end))]

    def _open_active_segment(self) -> None:
        """Reopen the segment to append to, cutting off at most the one record that was never acked.

        Anything more than that beyond the index (a missing or damaged index, a segment edited by
        hand) is refused: opening must never destroy stored batches.
        """
        row = self.db.execute("SELECT segment, offset + length FROM batches ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            indexed_segment, indexed_end = segment_name(1), len(SEGMENT_HEADER)
        else:
            indexed_segment, indexed_end = row[0], row[1] + RECORD_OVERHEAD
        later = [p for p in sorted(self.segments_dir.glob("*.seg")) if p.name > indexed_segment]
        next_name = segment_name(int(indexed_segment.split(".")[0]) + 1)
        for path in later:
            data = path.read_bytes()
            if path.name != next_name or not _is_unacked_tail(data[len(SEGMENT_HEADER):]):
                raise StoreError(f"segment {path} holds batches the index does not know; the index may be "
                                 "missing or damaged, so the store is not opened (nothing was changed); "
                                 "run `logseal verify` on it")
        self.segment = indexed_segment
        path = self.segments_dir / self.segment
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(fd).st_size
        if size < indexed_end and not (size == 0 and row is None):
            os.close(fd)
            raise StoreError(f"segment {path} is shorter ({size}) than its index says ({indexed_end}); "
                             "run `logseal verify` on the store")
        if size > indexed_end:
            tail = os.pread(fd, size - indexed_end, indexed_end)
            if not _is_unacked_tail(tail):
                os.close(fd)
                raise StoreError(f"segment {path} holds {size - indexed_end} bytes after its last indexed batch, "
                                 "more than one unacknowledged write; the store is not opened (nothing was "
                                 "changed); run `logseal verify` on it")
            log.warning("cutting a never-acked write from the end of a segment",
                        extra={"path": str(path), "from": indexed_end, "bytes": size - indexed_end})
            os.ftruncate(fd, indexed_end)
            os.fsync(fd)
            size = indexed_end
        for stale in later:
            log.warning("removing a segment holding only a never-acked write",
                        extra={"path": str(stale), "size": stale.stat().st_size})
            stale.unlink()
        if size == 0:
            os.write(fd, SEGMENT_HEADER)
            os.fsync(fd)
            fsync_dir(self.segments_dir)
            size = len(SEGMENT_HEADER)
        self._fd = fd
        self._size = size

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 consistency proof between two sizes of the log (O(new_size) hashing)."""
        if not 0 < old_size <= new_size <= self.tree.size:
            raise ValueError(f"sizes {old_size}..{new_size} are not within the log's {self.tree.size} leaves")
        leaves = [merkle.leaf_hash(bytes(h)) for (h,) in
                  self.db.execute("SELECT hash FROM batches WHERE id <= ? ORDER BY id", (new_size,))]
        return merkle.consistency_proof(leaves, old_size, new_size)

    def head(self, node: str, stream: str) -> ChainHead:
        key = (node, stream)
        head = self._heads.get(key)
        if head is None:
            row = self.db.execute("SELECT seq, hash FROM batches WHERE node=? AND stream=? ORDER BY seq DESC "
                                  "LIMIT 1", key).fetchone()
            head = GENESIS if row is None else ChainHead(row[0], bytes(row[1]))
            self._heads[key] = head
        return head

    def known_hash(self, node: str, stream: str, seq: int) -> bytes | None:
        row = self.db.execute("SELECT hash FROM batches WHERE node=? AND stream=? AND seq=?",
                              (node, stream, seq)).fetchone()
        return None if row is None else bytes(row[0])

    def append(self, raw: bytes, batch: SealedBatch, rows: Sequence[IndexRow],
               epochs: EpochRecords | None = None) -> int:
        """Durably store one verified batch; returns its ingest index (from 1).

        `epochs`: the boot and key epoch the batch brings, committed in the same transaction."""
        extra = sqlite_statements(epochs) if epochs is not None else []
        if self._size >= self.segment_max_bytes:
            self._rotate()
        offset = self._size
        record = _RECORD_HEAD.pack(RECORD_MAGIC, len(raw)) + raw + _RECORD_TAIL.pack(zlib.crc32(raw))
        view = memoryview(record)
        while view:
            view = view[os.pwrite(self._fd, view, self._size + len(record) - len(view)):]
        os.fdatasync(self._fd)
        self._size += len(record)
        h = batch.header
        db = self.db
        tree = self.tree.copy()
        leaf_index = tree.append(merkle.leaf_hash(batch.batch_hash))
        db.execute("BEGIN")
        try:
            cur = db.execute(
                "INSERT INTO batches (node, stream, seq, hash, segment, offset, length, event_count, first_ns, "
                "last_ns, received_ns, dropped) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (h.node_id, h.stream_id, h.seq, batch.batch_hash, self.segment, offset, len(raw),
                 0 if batch.payload_dropped else h.event_count, h.first_event_time_ns, h.last_event_time_ns,
                 time.time_ns(), int(batch.payload_dropped)),
            )
            batch_id = int(cur.lastrowid or 0)
            if batch_id != leaf_index + 1:
                raise StoreError(f"batch id {batch_id} is not Merkle leaf {leaf_index} + 1; the index was changed "
                                 "under the store")
            db.execute("UPDATE merkle SET size = ?, state = ? WHERE id = 1", (tree.size, tree.to_bytes()))
            node = h.node_id
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                           [(batch_id, r[0], r[1], node, r[2], r[3], r[4]) for r in rows])
            for sql, params in extra:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            os.ftruncate(self._fd, offset)
            self._size = offset
            raise
        self.tree = tree
        self._heads[(h.node_id, h.stream_id)] = ChainHead(h.seq, batch.batch_hash)
        return batch_id

    @property
    def shared(self) -> bool:
        """One aggregator writes a local store: its caches are the truth."""
        return False

    def epoch_records(self, node: str) -> list[EpochRecord]:
        return sqlite_epoch_records(self.db, node)

    def enrol(self, node: str, record: EpochRecord) -> bool:
        return sqlite_enrol(self.db, node, record)

    def boot(self, node: str, counter: int) -> Boot | None:
        return sqlite_boot(self.db, node, counter)

    def head_header(self, node: str, stream: str) -> BatchHeader | None:
        """The header of the stream's newest stored batch, read from its segment."""
        row = self.db.execute("SELECT segment, offset, length FROM batches WHERE node=? AND stream=? "
                              "ORDER BY seq DESC LIMIT 1", (node, stream)).fetchone()
        if row is None:
            return None
        return batch_from_bytes(read_record(self.segments_dir / str(row[0]), int(row[1]), int(row[2]))).header

    def refresh(self, node: str, stream: str) -> bool:
        """The single writer's heads are always current: nothing to re-read."""
        return False

    def remember_key(self, node: str, key_id: str, pem: bytes) -> None:
        """Keep the public key beside the batches it signs (STORE/keys/NODE.KEYID.pub), for offline `verify`."""
        keys_dir = self.directory / "keys"
        keys_dir.mkdir(exist_ok=True, mode=0o700)
        path = keys_dir / f"{node}.{key_id}.pub"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.replace(path)

    def record_equivocation(self, peer: str, raw: bytes, batch: SealedBatch, stored_hash: bytes) -> bool:
        """Keep a second, differently-hashed batch for a stored (node, stream, seq) as evidence.

        Returns False when this exact batch was already kept. The stored batch is never touched.
        """
        h = batch.header
        cur = self.db.execute(
            "INSERT OR IGNORE INTO equivocations (received_ns, peer, node, stream, seq, stored_hash, hash, batch) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (time.time_ns(), peer, h.node_id, h.stream_id, h.seq, stored_hash, batch.batch_hash, raw))
        return cur.rowcount > 0

    def add_checkpoint(self, size: int, root: bytes, note: str, time_ns: int, state: bytes) -> None:
        self.db.execute("INSERT INTO checkpoints (size, root, note, time_ns, state) VALUES (?,?,?,?,?)",
                        (size, root, note, time_ns, state))

    def last_checkpoint(self) -> StoredCheckpoint | None:
        row = self.db.execute("SELECT size, root, note, time_ns, state FROM checkpoints ORDER BY id DESC "
                              "LIMIT 1").fetchone()
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), str(row[2]), int(row[3]),
                                                         bytes(row[4]))

    def record_rejection(self, peer: str, node: str, stream: str, seq: int, verdict: str, reason: str) -> None:
        self.db.execute("INSERT INTO rejections (received_ns, peer, node, stream, seq, verdict, reason) "
                        "VALUES (?,?,?,?,?,?,?)", (time.time_ns(), peer, node, stream, seq, verdict, reason))

    def _rotate(self) -> None:
        os.close(self._fd)
        number = int(self.segment.split(".")[0]) + 1
        self.segment = segment_name(number)
        fd = os.open(self.segments_dir / self.segment, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, SEGMENT_HEADER)
        os.fsync(fd)
        fsync_dir(self.segments_dir)
        self._fd = fd
        self._size = len(SEGMENT_HEADER)

    def close(self) -> None:
        os.close(self._fd)
        self.db.close()
