"""The JetStream store: a replicated NATS JetStream stream that several aggregators share.

Layout of stream S (subjects) and its key-value bucket `S-state` (keys):
- `S.batch.<node>.<stream>`: each verified batch, byte-for-byte as the node signed it, published with
  `Nats-Msg-Id: <node>.<stream>.<seq>` (JetStream's dedup window drops a resend) and
  `Nats-Expected-Last-Subject-Sequence: <stream seq of the chain head>`: JetStream refuses the
  publish unless the subject's last message is the head this batch was verified against, so each
  subject is one linear chain whatever the number of aggregators. It is the chain's truth.
- `head.<node>.<stream>` = {seq, hash, sseq}: the chain head, updated by compare-and-set after the
  publish; a cache of the subject's last message that a crashed writer may have left one behind.
- `merkle` = {size, sseq, state}: the RFC 6962 append state over every batch message of the stream up
  to stream sequence `sseq`, in stream order (leaf = leaf_hash(batch hash)). Whoever appends
  extends it by compare-and-set over all batch messages since `sseq` (its own and others').
- `log` = {origin, pub}: the log's name and checkpoint key, fixed by the first aggregator.
- `key.<node>.<key id>`: node public keys (PEM), for offline `verify --jetstream`.
- `epochs.<node>` = {epoch: {key, ends, how, detail, ns}}: the node's key epochs (aggregator/epochs.py),
  created at enrolment and extended by compare-and-set after the certifying batch is published.
- `boot.<node>.<counter>` = {boot_id, ns}: each boot, created (create-only) before the publish of its
  first batch, so two aggregators cannot both take one boot counter under two boot ids.
- `S.checkpoint`: signed checkpoints; `S.rejection`: rejected batches (JSON); `S.equivocation.…`:
  a second, different signed batch for a stored seq, kept as evidence.

Crash between publish and the compare-and-set: the batch is in the stream, the KV one step
behind. The next publish on that chain fails its expected-sequence check (or is a dedup hit), the
writer reconciles the head from the subject's last message (recording the boot and the key epoch
that message brings, which were written before the head) and verifies again (the resend is then
a duplicate); the Merkle state catches up at the next append by any aggregator, since it is
always extended over every batch message up to the appender's own. Names not made of letters,
digits, '_' and '-' are written as '=' and their UTF-8 hex in subjects and keys.

nats-py is asyncio; the Ingestor is synchronous on one worker thread. The store runs its NATS
connection on a dedicated event loop thread and its methods wait for the result there.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from agent import merkle
from agent.aggregator.epochs import Boot, EpochRecord, EpochRecords, cert_record
from agent.aggregator.index_rows import IndexRow
from agent.aggregator.nats_tls import NatsTls
from agent.aggregator.store_api import ChainMoved, StoreUnavailable
from agent.errors import StoreError
from agent.keychain import read_cert
from agent.seal import GENESIS, BatchHeader, ChainHead, Finding, SealedBatch, open_payload
from agent.wire import WireError, batch_from_bytes

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = (10071, 10164)
DUPLICATE_WINDOW_S = 120.0
REQUEST_TIMEOUT_S = 5.0
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_HASH_CACHE = 200_000

T = TypeVar("T")


def token(value: str) -> str:
    """A subject token / key part for a name: as is when plain, else '=' and its UTF-8 hex."""
    return value if _PLAIN.fullmatch(value) else "=" + value.encode().hex()


def untoken(value: str) -> str:
    return bytes.fromhex(value[1:]).decode() if value.startswith("=") else value


@dataclass(frozen=True)
class Names:
    """Subjects and keys of one stream."""

    stream: str

    @property
    def bucket(self) -> str:
        return f"{self.stream}-state"

    @property
    def batches(self) -> str:
        return f"{self.stream}.batch.>"

    def batch_subject(self, node: str, stream: str) -> str:
        return f"{self.stream}.batch.{token(node)}.{token(stream)}"

    def is_batch(self, subject: str) -> bool:
        return subject.startswith(f"{self.stream}.batch.")

    @property
    def checkpoints(self) -> str:
        return f"{self.stream}.checkpoint"

    @property
    def rejections(self) -> str:
        return f"{self.stream}.rejection"

    def equivocation_subject(self, node: str, stream: str) -> str:
        return f"{self.stream}.equivocation.{token(node)}.{token(stream)}"

    @property
    def equivocations(self) -> str:
        return f"{self.stream}.equivocation.>"

    @staticmethod
    def head_key(node: str, stream: str) -> str:
        return f"head.{token(node)}.{token(stream)}"

    @staticmethod
    def key_key(node: str, key_id: str) -> str:
        return f"key.{token(node)}.{token(key_id)}"

    @staticmethod
    def epochs_key(node: str) -> str:
        return f"epochs.{token(node)}"

    @staticmethod
    def boot_key(node: str, counter: int) -> str:
        return f"boot.{token(node)}.{counter}"


MERKLE_KEY = "merkle"
OPEN_ATTEMPTS = 5
LOG_KEY = "log"


def _msg_id(node: str, stream: str, seq: int) -> str:
    return f"{token(node)}.{token(stream)}.{seq}"


async def connect(servers: Sequence[str], name: str = "logseal", timeout_s: float = 10.0,
                  tls: NatsTls | None = None) -> Client:
    """A connection that reconnects for ever once made; the first connect gives up after `timeout_s`."""

    state = {"connected": False, "last": ""}
    holder: dict[str, Client] = {}

    async def on_error(exc: Exception) -> None:
        state["last"] = str(exc) or type(exc).__name__
        if state["connected"]:
            log.warning("nats connection problem", extra={"reason": str(exc)})

    async def on_disconnect() -> None:
        nc = holder.get("nc")
        if nc is not None and not (nc.is_closed or nc.is_draining):
            log.info("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    try:
        nc = await asyncio.wait_for(nats.connect(
            servers=list(servers), name=name, connect_timeout=2, reconnect_time_wait=0.25,
            max_reconnect_attempts=-1, error_cb=on_error, disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect, tls=tls.context() if tls is not None else None), timeout=timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        reason = state["last"] or str(exc) or type(exc).__name__
        raise StoreError(f"cannot reach NATS at {', '.join(servers)} within {timeout_s:.0f}s: {reason}") from None
    state["connected"] = True
    holder["nc"] = nc
    return nc


async def ensure_stream(js: JetStreamContext, names: Names, replicas: int) -> KeyValue:
    """Create the stream and its bucket unless they exist (several aggregators may race here)."""
    try:
        await js.stream_info(names.stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(StreamConfig(
                name=names.stream, subjects=[f"{names.stream}.>"], num_replicas=replicas, storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S, deny_delete=True, deny_purge=True))
            log.info("created the JetStream stream", extra={"stream": names.stream, "replicas": replicas})
        except nats.js.errors.BadRequestError:
            await js.stream_info(names.stream)  # created meanwhile by another aggregator
    try:
        return await js.key_value(names.bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            return await js.create_key_value(KeyValueConfig(bucket=names.bucket, history=1, replicas=replicas,
                                                            storage=StorageType.FILE))
        except nats.js.errors.BadRequestError:
            return await js.key_value(names.bucket)


async def iter_messages(js: JetStreamContext, stream: str, subject: str, start_seq: int = 1,
                        fetch_timeout_s: float = 10.0) -> AsyncIterator[Msg]:
    """Every message of `stream` on `subject` from `start_seq`, in order, until the current end."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq),
                            ack_policy=AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True, num_replicas=1)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        info = await sub.consumer_info()
        if not info.num_pending:
            return
        while True:
            for msg in await sub.fetch(batch=512, timeout=fetch_timeout_s):
                yield msg
                if not msg.metadata.num_pending:
                    return
    finally:
        await sub.unsubscribe()


@dataclass
class _Head:
    seq: int
    hash: bytes
    sseq: int  # stream sequence of the head's message (0: none)
    rev: int | None  # KV revision of the head entry (None: no entry yet)

    @property
    def chain(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)


@dataclass
class _Merkle:
    state: merkle.MerkleState
    sseq: int
    rev: int | None


def _head_value(seq: int, digest: bytes, sseq: int) -> bytes:
    return orjson.dumps({"seq": seq, "hash": digest.hex(), "sseq": sseq})


def _merkle_value(state: merkle.MerkleState, sseq: int) -> bytes:
    return orjson.dumps({"size": state.size, "sseq": sseq, "state": state.to_bytes().hex()})


def _epoch_doc(record: EpochRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": record.public_key.hex(), "ends": dict(record.ends), "how": record.how,
                           "detail": record.detail, "ns": time.time_ns()}
    if record.attestation:
        doc["attestation"] = record.attestation
    return doc


def parse_epochs(value: bytes) -> list[EpochRecord]:
    """The records of an `epochs.<node>` entry, in epoch order."""
    doc = orjson.loads(value)
    return [EpochRecord(int(epoch), bytes.fromhex(item["key"]), {str(k): int(v) for k, v in item["ends"].items()},
                        str(item["how"]), str(item["detail"]), str(item.get("attestation", "")))
            for epoch, item in sorted(doc.items(), key=lambda kv: int(kv[0]))]


def parse_merkle(value: bytes) -> tuple[merkle.MerkleState, int]:
    doc = orjson.loads(value)
    state = merkle.MerkleState.from_bytes(bytes.fromhex(doc["state"]))
    if state.size != int(doc["size"]):
        raise StoreError(f"the Merkle state's frontier covers {state.size} batches, its entry says {doc['size']}")
    return state, int(doc["sseq"])


class JetStreamLog:
    """The asyncio core: one connection, the stream, its bucket and what this aggregator cached."""

    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue, names: Names) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.names = names
        self.heads: dict[tuple[str, str], _Head] = {}
        self.hashes: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self.merkle: _Merkle | None = None
        self.leaf_of_sseq: OrderedDict[int, int] = OrderedDict()
        self.leaves: list[bytes] = []  # leaf hashes read so far, for consistency proofs
        self._leaves_sseq = 0

    @classmethod
    async def open(cls, servers: Sequence[str], stream: str, replicas: int,
                   connect_timeout_s: float = 10.0, tls: NatsTls | None = None) -> JetStreamLog:
        nc = await connect(servers, name="logseal-aggregator", timeout_s=connect_timeout_s, tls=tls)
        js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        names = Names(stream)
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                kv = await ensure_stream(js, names, replicas)
                break
            except (nats.errors.TimeoutError, TimeoutError) as exc:
                # A cluster just started, or just lost a node, may still be electing its leaders.
                if attempt == OPEN_ATTEMPTS:
                    await nc.close()
                    raise StoreError(f"JetStream stream {stream!r} at {', '.join(servers)}: {exc}") from None
                log.warning("JetStream did not answer; trying again", extra={"stream": stream, "attempt": attempt})
                await asyncio.sleep(1.0)
            except nats.errors.Error as exc:
                await nc.close()
                raise StoreError(f"JetStream stream {stream!r} at {', '.join(servers)}: {exc}") from None
        return cls(nc, js, kv, names)

    def _remember(self, node: str, stream: str, seq: int, digest: bytes) -> None:
        self.hashes[(node, stream, seq)] = digest
        if len(self.hashes) > _HASH_CACHE:
            self.hashes.popitem(last=False)

    async def _kv_get(self, key: str) -> tuple[bytes | None, int | None]:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, None
        return entry.value, entry.revision

    async def load_head(self, node: str, stream: str) -> _Head:
        value, rev = await self._kv_get(Names.head_key(node, stream))
        if value is None:
            head = _Head(0, GENESIS.batch_hash, 0, None)
        else:
            doc = orjson.loads(value)
            head = _Head(int(doc["seq"]), bytes.fromhex(doc["hash"]), int(doc["sseq"]), rev)
        self.heads[(node, stream)] = head
        return head

    async def head(self, node: str, stream: str) -> _Head:
        head = self.heads.get((node, stream))
        return head if head is not None else await self.load_head(node, stream)

    async def _set_head(self, node: str, stream: str, seq: int, digest: bytes, sseq: int) -> _Head:
        """Compare-and-set the head to (seq, digest at sseq) unless the bucket already holds a later one."""
        key = Names.head_key(node, stream)
        head = await self.head(node, stream)
        while True:
            if head.sseq >= sseq:
                return head
            try:
                value = _head_value(seq, digest, sseq)
                rev = (await self.kv.create(key, value) if head.rev is None
                       else await self.kv.update(key, value, last=head.rev))
            except nats.js.errors.KeyWrongLastSequenceError:
                head = await self.load_head(node, stream)
                continue
            head = _Head(seq, digest, sseq, rev)
            self.heads[(node, stream)] = head
            return head

    async def reconcile(self, node: str, stream: str) -> _Head:
        """Bring the head up to the subject's last message (the stream is the chain's truth)."""
        head = await self.load_head(node, stream)
        try:
            last = await self.js.get_last_msg(self.names.stream, self.names.batch_subject(node, stream))
        except nats.js.errors.NotFoundError:
            return head
        if last.seq is None or last.data is None or last.seq <= head.sseq:
            return head
        batch = batch_from_bytes(last.data)
        log.warning("chain head was behind the stream (a writer stopped between publish and head update); "
                    "reconciled", extra={"node": node, "stream": stream, "seq": batch.header.seq})
        await self._records_of(batch)
        self._remember(node, stream, batch.header.seq, batch.batch_hash)
        head = await self._set_head(node, stream, batch.header.seq, batch.batch_hash, last.seq)
        await self.advance_merkle(last.seq)
        return head

    async def known_hash(self, node: str, stream: str, seq: int) -> bytes | None:
        cached = self.hashes.get((node, stream, seq))
        if cached is not None:
            return cached
        head = await self.head(node, stream)
        if seq == head.seq and head.sseq:
            return head.hash
        subject = self.names.batch_subject(node, stream)
        lo, hi = 1, head.sseq
        while lo <= hi:  # batch seqs grow with stream seqs on one subject: binary search
            mid = (lo + hi) // 2
            try:
                msg = await self.js.get_msg(self.names.stream, seq=mid, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                hi = mid - 1
                continue
            assert msg.data is not None and msg.seq is not None
            found = batch_from_bytes(msg.data)
            if found.header.seq == seq:
                self._remember(node, stream, seq, found.batch_hash)
                return found.batch_hash
            if found.header.seq < seq:
                lo = msg.seq + 1
            else:
                hi = mid - 1
        return None

    async def _records_of(self, batch: SealedBatch) -> None:
        """Record the boot and key epoch a stored batch brings (after a writer stopped before it did)."""
        h = batch.header
        if h.version < 2:
            return
        if not await self.claim_boot(h.node_id, Boot(h.boot_counter, h.boot_id)):
            log.error("a stored batch names a boot counter the bucket holds under another boot id",
                      extra={"node": h.node_id, "stream": h.stream_id, "seq": h.seq, "boot_counter": h.boot_counter})
        if h.next_key and not batch.payload_dropped:
            opened = open_payload(batch)
            cert = read_cert(h, opened.body) if opened.body is not None else None
            if cert is not None and not isinstance(cert, Finding):
                await self.add_epoch(h.node_id, cert_record(cert, f"{h.stream_id}#{h.seq}"))

    async def epoch_records(self, node: str) -> list[EpochRecord]:
        value, _ = await self._kv_get(Names.epochs_key(node))
        return [] if value is None else parse_epochs(value)

    async def enrol(self, node: str, record: EpochRecord) -> bool:
        try:
            await self.kv.create(Names.epochs_key(node), orjson.dumps({str(record.epoch): _epoch_doc(record)}))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def add_epoch(self, node: str, record: EpochRecord) -> None:
        """Add a certified epoch by compare-and-set (a no-op when it is there already)."""
        key = Names.epochs_key(node)
        while True:
            value, rev = await self._kv_get(key)
            doc: dict[str, Any] = {} if value is None else orjson.loads(value)
            held = doc.get(str(record.epoch))
            if held is not None:
                if held["key"] != record.public_key.hex():
                    log.error("the bucket holds another key for this epoch; the stream's certifying batches "
                              "decide (verify --jetstream)", extra={"node": node, "epoch": record.epoch})
                return
            doc[str(record.epoch)] = _epoch_doc(record)
            try:
                if rev is None:
                    await self.kv.create(key, orjson.dumps(doc))
                else:
                    await self.kv.update(key, orjson.dumps(doc), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return

    async def boot(self, node: str, counter: int) -> Boot | None:
        value, _ = await self._kv_get(Names.boot_key(node, counter))
        return None if value is None else Boot(counter, bytes.fromhex(orjson.loads(value)["boot_id"]))

    async def claim_boot(self, node: str, boot: Boot) -> bool:
        """Record the boot unless its counter is taken; False when it is taken under another boot id."""
        try:
            await self.kv.create(Names.boot_key(node, boot.counter),
                                 orjson.dumps({"boot_id": boot.boot_id.hex(), "ns": time.time_ns()}))
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            held = await self.boot(node, boot.counter)
            return held is None or held.boot_id == boot.boot_id

    async def head_header(self, node: str, stream: str) -> BatchHeader | None:
        try:
            last = await self.js.get_last_msg(self.names.stream, self.names.batch_subject(node, stream))
        except nats.js.errors.NotFoundError:
            return None
        return None if last.data is None else batch_from_bytes(last.data).header

    async def append(self, raw: bytes, batch: SealedBatch, epochs: EpochRecords | None = None) -> int:
        h = batch.header
        for boot in epochs.boots if epochs is not None else ():
            if not await self.claim_boot(h.node_id, boot):  # before the publish: one boot id per counter
                raise ChainMoved(f"{h.node_id}: boot {boot.counter} was stored meanwhile under another boot id")
        head = await self.head(h.node_id, h.stream_id)
        headers = {MSG_ID: _msg_id(h.node_id, h.stream_id, h.seq), EXPECTED_LAST_SUBJECT_SEQ: str(head.sseq)}
        try:
            ack = await self.js.publish(self.names.batch_subject(h.node_id, h.stream_id), raw, headers=headers,
                                        stream=self.names.stream)
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                await self.reconcile(h.node_id, h.stream_id)
                raise ChainMoved(f"{h.node_id}/{h.stream_id}: another writer stored a batch first") from None
            raise
        if ack.duplicate:  # published before (a resend, or by another aggregator): verify against the stream
            await self.reconcile(h.node_id, h.stream_id)
            raise ChainMoved(f"{h.node_id}/{h.stream_id}#{h.seq} is already in the stream")
        self._remember(h.node_id, h.stream_id, h.seq, batch.batch_hash)
        if epochs is not None and epochs.certified is not None:  # before the head: see reconcile
            await self.add_epoch(h.node_id, epochs.certified)
        await self._set_head(h.node_id, h.stream_id, h.seq, batch.batch_hash, ack.seq)
        return await self.advance_merkle(ack.seq, own=merkle.leaf_hash(batch.batch_hash))

    async def load_merkle(self) -> _Merkle:
        value, rev = await self._kv_get(MERKLE_KEY)
        if value is None:
            self.merkle = _Merkle(merkle.MerkleState(), 0, None)
        else:
            state, sseq = parse_merkle(value)
            self.merkle = _Merkle(state, sseq, rev)
        return self.merkle

    async def _leaf_at(self, sseq: int) -> bytes | None:
        try:
            msg = await self.js.get_msg(self.names.stream, seq=sseq)
        except nats.js.errors.NotFoundError:
            return None
        if msg.subject is None or not self.names.is_batch(msg.subject) or msg.data is None:
            return None
        try:
            return merkle.leaf_hash(batch_from_bytes(msg.data).batch_hash)
        except WireError as exc:
            log.error("a message on a batch subject is not a batch; left out of the Merkle log",
                      extra={"sseq": sseq, "reason": str(exc)})
            return None

    async def advance_merkle(self, target: int, own: bytes | None = None) -> int:
        """Extend the shared Merkle state over every batch message up to stream seq `target`; returns
        the leaf index of the message at `target` (-1 if it is not a batch)."""
        entry = self.merkle if self.merkle is not None else await self.load_merkle()
        while entry.sseq < target:
            state = entry.state.copy()
            placed: dict[int, int] = {}
            for sseq in range(entry.sseq + 1, target + 1):
                leaf = own if sseq == target and own is not None else await self._leaf_at(sseq)
                if leaf is not None:
                    placed[sseq] = state.append(leaf)
            value = _merkle_value(state, target)
            try:
                rev = (await self.kv.create(MERKLE_KEY, value) if entry.rev is None
                       else await self.kv.update(MERKLE_KEY, value, last=entry.rev))
            except nats.js.errors.KeyWrongLastSequenceError:
                entry = await self.load_merkle()
                continue
            entry = self.merkle = _Merkle(state, target, rev)
            for sseq, index in placed.items():
                self.leaf_of_sseq[sseq] = index
            while len(self.leaf_of_sseq) > _HASH_CACHE:
                self.leaf_of_sseq.popitem(last=False)
        known = self.leaf_of_sseq.get(target)
        if known is not None:
            return known
        later = 0  # another aggregator covered it: count the leaves after it
        for sseq in range(target + 1, entry.sseq + 1):
            if await self._leaf_at(sseq) is not None:
                later += 1
        return entry.state.size - 1 - later

    async def leaf_hashes(self, stop: int) -> list[bytes]:
        """The first `stop` leaf hashes, read from the stream once and kept."""
        if len(self.leaves) < stop:
            async for msg in iter_messages(self.js, self.names.stream, self.names.batches, self._leaves_sseq + 1):
                self.leaves.append(merkle.leaf_hash(batch_from_bytes(msg.data).batch_hash))
                self._leaves_sseq = msg.metadata.sequence.stream
                if len(self.leaves) >= stop:
                    break
        if len(self.leaves) < stop:
            raise ValueError(f"the stream holds {len(self.leaves)} batches, fewer than {stop}")
        return self.leaves[:stop]

    async def publish_record(self, subject: str, data: bytes, msg_id: str | None = None) -> bool:
        """Publish a side record (rejection, evidence); False when JetStream dropped it as a duplicate."""
        ack = await self.js.publish(subject, data, headers={MSG_ID: msg_id} if msg_id else None,
                                    stream=self.names.stream)
        return not ack.duplicate

    async def last_message(self, subject: str) -> tuple[int, bytes] | None:
        """(stream seq, data) of the last message on `subject`, or None."""
        try:
            msg = await self.js.get_last_msg(self.names.stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        return None if msg.seq is None or msg.data is None else (msg.seq, msg.data)

    async def publish_after(self, subject: str, data: bytes, msg_id: str, last_sseq: int) -> int | None:
        """Publish if `subject`'s last message is still at `last_sseq`; its stream seq, or None if not."""
        try:
            ack = await self.js.publish(subject, data, headers={MSG_ID: msg_id, EXPECTED_LAST_SUBJECT_SEQ:
                                                                str(last_sseq)}, stream=self.names.stream)
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return None
            raise
        return None if ack.duplicate else int(ack.seq)

    async def put_once(self, key: str, value: bytes) -> bytes:
        """Create `key` with `value` unless it exists; returns what the bucket holds."""
        try:
            await self.kv.create(key, value)
            return value
        except nats.js.errors.KeyWrongLastSequenceError:
            held, _ = await self._kv_get(key)
            return held if held is not None else value

    async def close(self) -> None:
        await self.nc.drain()


class JetStreamStore:
    """The store interface of the Ingestor over `JetStreamLog`, run on its own event loop thread."""

    def __init__(self, servers: Sequence[str], stream: str, replicas: int = 3, connect_timeout_s: float = 10.0,
                 tls: NatsTls | None = None) -> None:
        self.servers = list(servers)
        self.names = Names(stream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="logseal-nats", daemon=True)
        self._thread.start()
        try:
            self.log = self._run(JetStreamLog.open(self.servers, stream, replicas, connect_timeout_s, tls),
                                 timeout_s=60)
        except BaseException:
            self._stop_loop()
            self._loop.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s)
        except StoreError:
            raise
        except (TimeoutError, nats.errors.Error, ConnectionError) as exc:
            future.cancel()
            raise StoreUnavailable(f"JetStream {self.names.stream} not available: "
                                   f"{str(exc) or type(exc).__name__}") from None

    def head(self, node: str, stream: str) -> ChainHead:
        return self._run(self.log.head(node, stream)).chain

    def known_hash(self, node: str, stream: str, seq: int) -> bytes | None:
        return self._run(self.log.known_hash(node, stream, seq))

    def refresh(self, node: str, stream: str) -> bool:
        before = self.log.heads.get((node, stream))
        after = self._run(self.log.reconcile(node, stream))
        return before is None or (before.seq, before.sseq) != (after.seq, after.sseq)

    @property
    def shared(self) -> bool:
        """Several aggregators write the stream: heads and epochs read here may be stale."""
        return True

    def append(self, raw: bytes, batch: SealedBatch, rows: Sequence[IndexRow],
               epochs: EpochRecords | None = None) -> int:
        """Claim the batch's boot, publish, record the epoch it certifies, then CAS the head and the
        Merkle state; returns the leaf index + 1. The query index is the batch itself (its payload),
        so `rows` are not kept apart."""
        return self._run(self.log.append(raw, batch, epochs)) + 1

    def epoch_records(self, node: str) -> list[EpochRecord]:
        return self._run(self.log.epoch_records(node))

    def enrol(self, node: str, record: EpochRecord) -> bool:
        return self._run(self.log.enrol(node, record))

    def boot(self, node: str, counter: int) -> Boot | None:
        return self._run(self.log.boot(node, counter))

    def head_header(self, node: str, stream: str) -> BatchHeader | None:
        return self._run(self.log.head_header(node, stream))

    def record_equivocation(self, peer: str, raw: bytes, batch: SealedBatch, stored_hash: bytes) -> bool:
        h = batch.header
        return self._run(self.log.publish_record(
            self.names.equivocation_subject(h.node_id, h.stream_id), raw,
            f"eq.{_msg_id(h.node_id, h.stream_id, h.seq)}.{batch.batch_hash.hex()[:32]}"))

    def record_rejection(self, peer: str, node: str, stream: str, seq: int, verdict: str, reason: str) -> None:
        record = orjson.dumps({"peer": peer, "node": node, "stream": stream, "seq": seq, "verdict": verdict,
                               "reason": reason})
        try:
            self._run(self.log.publish_record(self.names.rejections, record))
        except (StoreUnavailable, nats.errors.Error) as exc:
            log.error("rejection not recorded in the stream (it is logged here)", extra={"reason": str(exc)})

    def remember_key(self, node: str, key_id: str, pem: bytes) -> None:
        held = self._run(self.log.put_once(Names.key_key(node, key_id), pem))
        if held != pem:
            log.error("the stream's bucket holds another public key under this node and key id",
                      extra={"node": node, "key_id": key_id})

    def merkle_state(self, fresh: bool = True) -> merkle.MerkleState:
        """The shared tree's append state (re-read from the bucket unless `fresh` is False)."""
        if fresh or self.log.merkle is None:
            return self._run(self.log.load_merkle()).state
        return self.log.merkle.state

    @property
    def tree(self) -> merkle.MerkleState:
        return self.merkle_state(fresh=False)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        size = self.merkle_state().size
        if not 0 < old_size <= new_size <= size:
            raise ValueError(f"sizes {old_size}..{new_size} are not within the log's {size} leaves")
        return merkle.consistency_proof(self._run(self.log.leaf_hashes(new_size), timeout_s=600),
                                        old_size, new_size)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60) -> T:
        """Run a coroutine on the store's event loop (for the checkpointer)."""
        return self._run(coro, timeout_s)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def close(self) -> None:
        try:
            self._run(self.log.close(), timeout_s=10)
        except (StoreUnavailable, StoreError) as exc:
            log.warning("nats connection not drained", extra={"reason": str(exc)})
        self._stop_loop()
        self._loop.close()
