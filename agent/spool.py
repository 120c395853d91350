"""Disk buffer of sealed batches, each stored together with the file positions it covers.

Design constraints:
- One file per batch, `<stream>/<seq>.batch`, written temp -> fsync -> rename -> fsync(dir): a
  batch is either wholly in the spool or not at all, and its positions land in the same write.
- Every record is versioned and checksummed (SHA-256 over the record); a record that fails the
  check is moved to `quarantine/` for inspection, never silently deleted.
- A batch file is deleted only after the aggregator acked it `stored` or `duplicate`; before the
  delete, the stream's `checkpoint` (positions and chain head of the newest acked batch) is
  written the same atomic way, so the positions of acked data are never lost.
- On start, the newest spooled batch of a stream (else its checkpoint) gives both the chain head
  and the file positions: no stored line is read again, no unstored line is skipped.
- Bounded by `max_bytes`. When full (or the disk says ENOSPC), `when_full` decides:
  `block` (default) waits for acks to make room, so reading stops and nothing is lost while the
  logs stay on disk; `drop_oldest` drops the payload of the oldest unacked batch, keeping its signed
  header so the chain still links, and reports it (`take_dropped`) for a gap record in the stream.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agent.durable import fsync_dir
from agent.errors import SpoolCorrupt
from agent.keychain import KEYS_STREAM
from agent.normalize.assemble import HeldLine
from agent.seal import GENESIS, ChainHead
from agent.tail import Position
from agent.wire import batch_from_bytes, without_payload

log = logging.getLogger(__name__)

SPOOL_FORMAT_VERSION = 1
_MAGIC = b"LSSPOOL\x00"
_RECORD_HEAD = struct.Struct(">8sHII")  # magic, version, meta length, batch length
_CHECKPOINT = "checkpoint"
# Batch bytes kept in memory for sending without a disk read; beyond this they are re-read.
_CACHE_LIMIT_BYTES = 8 << 20

BatchKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A line an assembler held (not yet in any event) when a batch was spooled, and its file."""

    key: str
    path: str
    line: HeldLine


@dataclass(frozen=True, slots=True)
class StreamState:
    """What a stream resumes from: its chain head, the file positions already covered, and the
    lines read but held back by an assembler (to be fed again)."""

    head: ChainHead = GENESIS
    positions: dict[str, Position] = field(default_factory=dict)
    held: list[HeldRecord] = field(default_factory=list)
    # After a quarantined record: the later records (their state and batch bytes), taken out of the
    # spool because they chain to a batch that can no longer be sent. The stream seals their events
    # again after a gap record (`broken_seq` names the lost batch).
    orphans: list[tuple[StreamState, bytes]] = field(default_factory=list)
    broken_seq: int = 0


def _positions_to_json(positions: dict[str, Position]) -> list[dict[str, object]]:
    return [{"path": p.path, "dev": p.dev, "ino": p.ino, "offset": p.offset, "cursor": p.cursor, "head": p.head,
             "head_len": p.head_len, "tail": p.tail, "origin": p.origin,
             "size": p.size} for p in positions.values()]


def _positions_from_json(items: list[dict[str, object]]) -> dict[str, Position]:
    out: dict[str, Position] = {}
    for item in items:
        p = Position(str(item["path"]), int(str(item["dev"])), int(str(item["ino"])), int(str(item["offset"])),
                     str(item.get("cursor", "")), str(item.get("head", "")), int(str(item.get("head_len", 0))),
                     str(item.get("tail", "")), str(item.get("origin", "")),
                     int(str(item.get("size", 0))))
        out[p.key] = p
    return out


def _held_to_json(held: list[HeldRecord]) -> list[dict[str, object]]:
    return [{"key": h.key, "path": h.path, "offset": h.line.offset, "received": h.line.received,
             "line": base64.b64encode(h.line.line).decode("ascii")} for h in held]


def _held_from_json(items: list[dict[str, Any]]) -> list[HeldRecord]:
    return [HeldRecord(str(i["key"]), str(i["path"]),
                       HeldLine(base64.b64decode(i["line"]), int(i["offset"]), str(i["received"]))) for i in items]


def encode_record(seq: int, batch_hash: bytes, positions: dict[str, Position], batch: bytes,
                  held: list[HeldRecord] | None = None) -> bytes:
    meta = orjson.dumps({"seq": seq, "batch_hash": batch_hash.hex(), "positions": _positions_to_json(positions),
                         "held": _held_to_json(held or [])})
    body = _RECORD_HEAD.pack(_MAGIC, SPOOL_FORMAT_VERSION, len(meta), len(batch)) + meta + batch
    return body + hashlib.sha256(body).digest()


def decode_record(data: bytes) -> tuple[StreamState, bytes]:
    if len(data) < _RECORD_HEAD.size + 32:
        raise SpoolCorrupt(f"record of {len(data)} bytes is shorter than its header")
    magic, version, meta_len, batch_len = _RECORD_HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise SpoolCorrupt("bad magic")
    if version != SPOOL_FORMAT_VERSION:
        raise SpoolCorrupt(f"spool format version {version}, this build reads {SPOOL_FORMAT_VERSION}")
    end = _RECORD_HEAD.size + meta_len + batch_len
    if len(data) != end + 32:
        raise SpoolCorrupt(f"record length {len(data)} does not match its header ({end + 32})")
    if hashlib.sha256(data[:end]).digest() != data[end:]:
        raise SpoolCorrupt("checksum mismatch")
    meta = orjson.loads(data[_RECORD_HEAD.size:_RECORD_HEAD.size + meta_len])
    batch = data[_RECORD_HEAD.size + meta_len:end]
    head = ChainHead(int(meta["seq"]), bytes.fromhex(meta["batch_hash"]))
    return StreamState(head, _positions_from_json(meta["positions"]), _held_from_json(meta.get("held", []))), batch


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


WHEN_FULL = ("block", "drop_oldest")


class SpoolStopped(Exception):
    """Raised to a writer blocked on a full spool when the agent stops."""


@dataclass(frozen=True, slots=True)
class DroppedBatch:
    """A spooled batch whose payload had to be dropped to make room."""

    stream: str
    seq: int
    event_count: int
    bytes_dropped: int


@dataclass(slots=True)
class _Entry:
    path: Path
    state: StreamState
    data: bytes | None
    size: int = 0
    dropped: bool = False
    sent: bool = False


class Spool:
    """The agent's disk buffer; thread-safe (the pipeline appends, the shipper reads and acks)."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30, when_full: str = "block") -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.when_full = when_full
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Condition()
        self._pending: OrderedDict[BatchKey, _Entry] = OrderedDict()
        self._acked_heads: dict[str, int] = {}
        self._cached_bytes = 0
        self._listeners: list[list[BatchKey]] = []
        self._bytes = 0
        self._dropped: dict[str, list[DroppedBatch]] = {}
        self._stopping = False
        self.counters: dict[str, int] = {}

    def _count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stop_waiting(self) -> None:
        """Release writers blocked on a full spool (the agent is stopping)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    # -- recovery -------------------------------------------------------------------------------
    def recover(self, stream: str) -> StreamState:
        """Load a stream's pending batches (in seq order) and return where it resumes."""
        stream_dir = self.directory / stream
        stream_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for tmp in stream_dir.glob("*.tmp"):
            tmp.unlink()  # a write that never reached its rename: its batch was never spooled
        state = StreamState()
        checkpoint = stream_dir / _CHECKPOINT
        if checkpoint.exists():
            try:
                state, _ = decode_record(checkpoint.read_bytes())
            except SpoolCorrupt as exc:
                self._quarantine(checkpoint, str(exc))
        self._acked_heads[stream] = state.head.seq
        broken_seq = 0
        orphans: list[tuple[StreamState, bytes]] = []
        for path in sorted(stream_dir.glob("*.batch")):
            try:
                record, raw = decode_record(path.read_bytes())
            except (SpoolCorrupt, OSError) as exc:
                self._quarantine(path, str(exc))
                if not broken_seq:
                    broken_seq = int(path.stem) if path.stem.isdigit() else state.head.seq + 1
                continue
            if record.head.seq <= self._acked_heads[stream]:
                path.unlink()  # acked before the crash; its checkpoint is already on disk
                continue
            if broken_seq:
                # Chains to the quarantined batch: it cannot be sent as it is; its events are sealed again.
                orphans.append((record, raw))
                path.unlink()
                continue
            state = record
            size = path.stat().st_size
            with self._lock:
                self._pending[(stream, record.head.seq)] = _Entry(path, record, None, size)
                self._bytes += size
        if broken_seq:
            # The chain resumes at the last good batch; files and held lines resume where the last
            # orphan left them (its events are sealed again, so its lines must not be read again).
            last = orphans[-1][0] if orphans else state
            state = StreamState(state.head, last.positions, last.held, orphans, broken_seq)
        return state

    def _quarantine(self, path: Path, reason: str) -> None:
        target_dir = self.directory / "quarantine"
        target_dir.mkdir(exist_ok=True, mode=0o700)
        target = target_dir / f"{path.parent.name}-{path.name}"
        os.replace(path, target)
        self._count("quarantined")
        log.error("spool record failed its check and was quarantined",
                  extra={"path": str(path), "moved_to": str(target), "reason": reason})

    # -- pipeline side --------------------------------------------------------------------------
    def append(self, stream: str, seq: int, batch_hash: bytes, positions: dict[str, Position],
               batch: bytes, held: list[HeldRecord] | None = None) -> None:
        """Durably spool one sealed batch with the positions it covers; returns after fsync.

        Waits while the spool is full under `block`; raises SpoolStopped if the agent stops meanwhile.
        """
        path = self.directory / stream / f"{seq:016d}.batch"
        record = encode_record(seq, batch_hash, positions, batch, held)
        while True:
            self._make_room(len(record))
            try:
                _write_atomic(path, record)
                break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                self._count("enospc")
                log.warning("spool disk is full (ENOSPC); handling it as a full spool",
                            extra={"when_full": self.when_full})
                with self._lock:
                    if not self._pending:  # nothing of ours to free: wait for the disk
                        self._lock.wait(1.0)
                        if self._stopping:
                            raise SpoolStopped from None
                    else:
                        self._free_one(waiting=True)
        with self._lock:
            keep = self._cached_bytes + len(batch) <= _CACHE_LIMIT_BYTES
            state = StreamState(ChainHead(seq, batch_hash), positions, held or [])
            self._pending[(stream, seq)] = _Entry(path, state, batch if keep else None, len(record))
            self._bytes += len(record)
            self._count("batches_spooled")
            if keep:
                self._cached_bytes += len(batch)
            for listener in self._listeners:
                listener.append((stream, seq))
            self._lock.notify_all()

    def _make_room(self, size: int) -> None:
        with self._lock:
            while self._bytes + size > self.max_bytes and self._pending:
                if self._stopping:
                    raise SpoolStopped
                self._free_one(waiting=False)

    def _free_one(self, waiting: bool) -> None:
        """With the lock held: wait for an ack (block), or drop the oldest payload (drop_oldest)."""
        if self.when_full == "block":
            if not waiting:
                self._count("full_waits")
            self._lock.wait(0.5)
            return
        for key, entry in self._pending.items():
            if not entry.dropped and key[0] != KEYS_STREAM:  # a key epoch's certificate is never dropped
                self._drop_payload(key, entry)
                return
        self._lock.wait(0.5)  # every pending batch is already a header: wait for acks

    def _drop_payload(self, key: BatchKey, entry: _Entry) -> None:
        stream, seq = key
        state, raw = decode_record(entry.path.read_bytes())
        header_only = without_payload(raw)
        record = encode_record(seq, state.head.batch_hash, state.positions, header_only, state.held)
        _write_atomic(entry.path, record)
        batch = batch_from_bytes(raw)
        if entry.data is not None:
            self._cached_bytes -= len(entry.data)
        entry.data = None
        entry.dropped = True
        self._bytes += len(record) - entry.size
        entry.size = len(record)
        self._dropped.setdefault(stream, []).append(
            DroppedBatch(stream, seq, batch.header.event_count, len(raw) - len(header_only)))
        self._count("batches_dropped")
        self._count("events_dropped", batch.header.event_count)
        log.warning("spool full: dropped the payload of the oldest unacked batch",
                    extra={"stream": stream, "seq": seq, "events": batch.header.event_count})

    def take_dropped(self, stream: str) -> list[DroppedBatch]:
        with self._lock:
            return self._dropped.pop(stream, [])

    # -- shipper side ---------------------------------------------------------------------------
    def subscribe(self) -> list[BatchKey]:
        """A send queue: every pending key now, and each key appended later."""
        with self._lock:
            queue = list(self._pending)
            self._listeners.append(queue)
            return queue

    def unsubscribe(self, queue: list[BatchKey]) -> None:
        with self._lock:
            if queue in self._listeners:
                self._listeners.remove(queue)

    @property
    def condition(self) -> threading.Condition:
        return self._lock

    def read(self, key: BatchKey) -> bytes | None:
        """The batch bytes of a pending key, or None if it was acked meanwhile."""
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                return None
            if entry.data is not None:
                return entry.data
            path = entry.path
        try:
            return decode_record(path.read_bytes())[1]
        except FileNotFoundError:
            return None

    def mark_sent(self, key: BatchKey) -> bool:
        """Note that a batch went out; True if it had gone out before (a resend)."""
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                return False
            resend, entry.sent = entry.sent, True
            return resend

    def ack(self, key: BatchKey) -> bool:
        """Forget an acked batch: checkpoint its positions, then delete it. False if unknown."""
        stream, seq = key
        with self._lock:
            entry = self._pending.get(key)
        if entry is None:
            return False
        if seq > self._acked_heads.get(stream, 0):
            state = entry.state
            checkpoint = encode_record(seq, state.head.batch_hash, state.positions, b"", state.held)
            _write_atomic(self.directory / stream / _CHECKPOINT, checkpoint)
            self._acked_heads[stream] = seq
        entry.path.unlink(missing_ok=True)
        with self._lock:
            removed = self._pending.pop(key, None)
            if removed is not None:
                self._bytes -= removed.size
                if removed.data is not None:
                    self._cached_bytes -= len(removed.data)
            self._lock.notify_all()
        return True

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest unacked batch was spooled (0 when none)."""
        with self._lock:
            first = next(iter(self._pending.values()), None)
        if first is None:
            return 0.0
        try:
            return max(0.0, time.time() - first.path.stat().st_mtime)
        except OSError:
            return 0.0

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_empty(self, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout=timeout_s)
