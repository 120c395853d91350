"""Sealing and opening of batches: the pure core of the integrity chain.

Invariants:
- The batch hash is SHA-256 over `canonical_header_bytes(header)`: a domain tag, then each header
  field in proto field order, integers fixed-width big-endian, strings/bytes u32-length-prefixed.
  Protobuf bytes are never hashed (protobuf encoding is not canonical).
- The Ed25519 signature covers the batch hash; the header binds the payload by its SHA-256, so a
  verified signature vouches for every payload byte.
- Batches of one (node, stream) form a chain: seq starts at 1 and rises by one; `prev_hash` is
  the previous batch's hash (32 zero bytes for seq 1).
- Version 2 headers add the key epoch, the agent's boot id and counter and, in an epoch's last
  batch, the next epoch's public key (`next_key`); they hash under their own domain tag. Version 1
  headers still verify (read-only), so stores written before epochs stay verifiable.
- Opening never decompresses more than the declared `uncompressed_length` (itself capped), so a
  zstd bomb costs the receiver at most that much memory.

No I/O here: keys, events and time come in as values, verdicts go out as values.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import SealError
from agent.normalize.common import Event, timestamp_to_ns

FORMAT_VERSION = 2
# Versions this build reads: 1 (before key epochs) and 2.
READABLE_VERSIONS = (1, 2)
ZERO_HASH = bytes(32)
# Upper bound on one batch's decompressed payload, whatever a header claims.
MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024
_DOMAIN_TAG_V1 = b"logseal-batch-v1\x00"
_DOMAIN_TAG = b"logseal-batch-v2\x00"
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BatchHeader:
    version: int
    node_id: str
    stream_id: str
    seq: int
    prev_hash: bytes
    key_id: str
    event_count: int
    first_event_time_ns: int
    last_event_time_ns: int
    payload_sha256: bytes
    uncompressed_length: int
    key_epoch: int = 0
    boot_id: bytes = b""
    boot_counter: int = 0
    next_key: bytes = b""


@dataclass(frozen=True, slots=True)
class SealedBatch:
    header: BatchHeader
    payload: bytes
    signature: bytes
    batch_hash: bytes
    # The agent dropped the payload (spool full); header and signature still link the chain.
    payload_dropped: bool = False


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Events serialized for one batch, before compression, chaining and signing."""

    stream_id: str
    seq: int
    body: bytes
    event_count: int
    first_event_time_ns: int
    last_event_time_ns: int


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last accepted batch of one stream; seq 0 means none yet."""

    seq: int
    batch_hash: bytes


GENESIS = ChainHead(seq=0, batch_hash=ZERO_HASH)


class Verdict(enum.Enum):
    OK = "ok"
    UNSUPPORTED_VERSION = "unsupported format version"
    MALFORMED = "malformed header"
    UNKNOWN_NODE = "unknown node"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    DIGEST_MISMATCH = "payload digest mismatch"
    TRUNCATED_PAYLOAD = "truncated payload"
    DECOMPRESSION_LIMIT = "decompression limit exceeded"
    CORRUPT_PAYLOAD = "corrupt payload"
    LENGTH_MISMATCH = "uncompressed length mismatch"
    EVENT_COUNT_MISMATCH = "event count mismatch"
    SEQ_GAP = "sequence gap"
    CHAIN_BROKEN = "chain broken"
    REPLAYED = "replayed batch"
    REORDERED = "reordered batch"
    FORKED = "forked chain"
    IDENTITY_MISMATCH = "node id differs from the client certificate's"
    KEY_EPOCH_MISUSE = "key-epoch misuse"
    # Signed at an epoch the receiver has not seen certified yet: retryable (the certifying batch comes first).
    KEY_EPOCH_PENDING = "key epoch not yet certified"


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def __str__(self) -> str:
        return self.verdict.name if not self.reason else f"{self.verdict.name}: {self.reason}"


FINDING_OK = Finding(Verdict.OK)

# Keys enrolled per node: node_id -> {key_id: public key}.
Keyring = Mapping[str, Mapping[str, Ed25519PublicKey]]


def keyring_from(keys_by_node: Mapping[str, Ed25519PublicKey]) -> dict[str, dict[str, Ed25519PublicKey]]:
    return {node: {key_id_of(key): key} for node, key in keys_by_node.items()}


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Hex of the first 8 bytes of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def canonical_header_bytes(h: BatchHeader) -> bytes:
    base = b"".join(
        (
            _DOMAIN_TAG_V1 if h.version == 1 else _DOMAIN_TAG,
            struct.pack(">I", h.version),
            _lp(h.node_id.encode()),
            _lp(h.stream_id.encode()),
            struct.pack(">Q", h.seq),
            _lp(h.prev_hash),
            _lp(h.key_id.encode()),
            struct.pack(">I", h.event_count),
            struct.pack(">q", h.first_event_time_ns),
            struct.pack(">q", h.last_event_time_ns),
            _lp(h.payload_sha256),
            struct.pack(">Q", h.uncompressed_length),
        )
    )
    if h.version == 1:
        return base
    return base + struct.pack(">Q", h.key_epoch) + _lp(h.boot_id) + struct.pack(">Q", h.boot_counter) + _lp(h.next_key)


def batch_hash(header: BatchHeader) -> bytes:
    return hashlib.sha256(canonical_header_bytes(header)).digest()


def encode_events(events: Sequence[Event]) -> bytes:
    """Payload body: one JSON object per line, `\\n`-separated."""
    return b"\n".join([orjson.dumps(e) for e in events])


def decode_events(body: bytes) -> list[Event]:
    if not body:
        return []
    return [orjson.loads(line) for line in body.split(b"\n")]


def event_id(node_id: str, stream_id: str, seq: int, index: int) -> str:
    return f"{node_id}:{stream_id}:{seq}:{index}"


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Sealer:
    """Seals batches for one node: holds its signing key (of one epoch) and a reusable zstd context."""

    def __init__(self, node_id: str, signing_key: Ed25519PrivateKey, zstd_level: int = 3, *, key_epoch: int = 0,
                 boot_id: bytes = b"", boot_counter: int = 0) -> None:
        self.node_id = node_id
        self._key = signing_key
        self.key_id = key_id_of(signing_key.public_key())
        self.key_epoch = key_epoch
        self.boot_id = boot_id
        self.boot_counter = boot_counter
        self._compressor = zstandard.ZstdCompressor(level=zstd_level, write_checksum=True)

    def switch_key(self, signing_key: Ed25519PrivateKey, key_epoch: int) -> None:
        """Sign from now on with the key of `key_epoch`; the old key object is no longer referenced here."""
        self._key = signing_key
        self.key_id = key_id_of(signing_key.public_key())
        self.key_epoch = key_epoch

    def encode(self, stream_id: str, seq: int, events: Sequence[Event]) -> EncodedBatch:
        """First half of sealing (CPU in Python): give each event its `event.id`, serialize."""
        prefix = f"{self.node_id}:{stream_id}:{seq}:"
        first = last = ""
        for index, event in enumerate(events):
            event["event"]["id"] = prefix + str(index)
            ts = event["@timestamp"]
            if not first or ts < first:
                first = ts
            if ts > last:
                last = ts
        return EncodedBatch(
            stream_id=stream_id, seq=seq, body=encode_events(events), event_count=len(events),
            first_event_time_ns=timestamp_to_ns(first) if first else 0,
            last_event_time_ns=timestamp_to_ns(last) if last else 0,
        )

    def seal_encoded(self, head: ChainHead, batch: EncodedBatch, next_key: Ed25519PublicKey | None = None
                     ) -> SealedBatch:
        """Second half (mostly outside the GIL): compress, hash, chain to `head`, sign.

        `next_key`: this batch is the epoch's last and certifies the next epoch's public key."""
        if batch.seq != head.seq + 1:
            raise SealError(f"stream {batch.stream_id}: batch seq {batch.seq} does not follow head {head.seq}")
        payload = self._compressor.compress(batch.body)
        header = BatchHeader(
            version=FORMAT_VERSION,
            node_id=self.node_id,
            stream_id=batch.stream_id,
            seq=batch.seq,
            prev_hash=head.batch_hash,
            key_id=self.key_id,
            event_count=batch.event_count,
            first_event_time_ns=batch.first_event_time_ns,
            last_event_time_ns=batch.last_event_time_ns,
            payload_sha256=hashlib.sha256(payload).digest(),
            uncompressed_length=len(batch.body),
            key_epoch=self.key_epoch,
            boot_id=self.boot_id,
            boot_counter=self.boot_counter,
            next_key=raw_public(next_key) if next_key is not None else b"",
        )
        digest = batch_hash(header)
        return SealedBatch(header=header, payload=payload, signature=self._key.sign(digest), batch_hash=digest)

    def seal(self, stream_id: str, head: ChainHead, events: Sequence[Event]) -> SealedBatch:
        """Seal `events` as batch head.seq+1 of `stream_id`. Sets each event's `event.id`."""
        return self.seal_encoded(head, self.encode(stream_id, head.seq + 1, events))


@dataclass(frozen=True, slots=True)
class Opened:
    """Result of opening a batch: the finding and, when the payload could be read, its body."""

    finding: Finding
    body: bytes | None = None


def verify_signature(batch: SealedBatch, keyring: Keyring) -> Finding:
    h = batch.header
    if h.version not in READABLE_VERSIONS:
        return Finding(Verdict.UNSUPPORTED_VERSION, f"version {h.version}, this build reads "
                                                    f"{', '.join(map(str, READABLE_VERSIONS))}")
    if len(h.prev_hash) != 32 or len(h.payload_sha256) != 32 or h.seq < 1:
        return Finding(Verdict.MALFORMED, "prev_hash and payload_sha256 must be 32 bytes and seq >= 1")
    if h.version == 1 and (h.key_epoch or h.boot_id or h.boot_counter or h.next_key):
        return Finding(Verdict.MALFORMED, "a version 1 header carries version 2 fields")
    if h.next_key and len(h.next_key) != 32:
        return Finding(Verdict.MALFORMED, "next_key must be a raw 32-byte Ed25519 public key")
    node_keys = keyring.get(h.node_id)
    if node_keys is None:
        return Finding(Verdict.UNKNOWN_NODE, f"node {h.node_id!r} has no enrolled key")
    key = node_keys.get(h.key_id)
    if key is None:
        return Finding(Verdict.UNKNOWN_KEY, f"key {h.key_id!r} is not enrolled for node {h.node_id!r}")
    try:
        key.verify(batch.signature, batch.batch_hash)
    except InvalidSignature:
        return Finding(Verdict.BAD_SIGNATURE, f"signature does not verify with key {h.key_id}")
    return FINDING_OK


def open_payload(batch: SealedBatch, max_uncompressed: int = MAX_UNCOMPRESSED_BYTES) -> Opened:
    """Check the payload against its signed digest and decompress it within the declared bound."""
    h = batch.header
    limit = min(h.uncompressed_length, max_uncompressed)
    if h.uncompressed_length > max_uncompressed:
        return Opened(Finding(Verdict.DECOMPRESSION_LIMIT,
                              f"declares {h.uncompressed_length} bytes, limit is {max_uncompressed}"))
    digest_ok = hashlib.sha256(batch.payload).digest() == h.payload_sha256
    body, complete, error = _bounded_decompress(batch.payload, limit)
    if not digest_ok:
        if error is None and not complete and len(body) <= limit:
            return Opened(Finding(Verdict.TRUNCATED_PAYLOAD,
                                  f"zstd frame ends early after {len(batch.payload)} bytes"))
        return Opened(Finding(Verdict.DIGEST_MISMATCH, "SHA-256 of payload differs from the signed header"))
    if len(body) > limit:
        return Opened(Finding(Verdict.DECOMPRESSION_LIMIT,
                              f"payload expands beyond its declared {h.uncompressed_length} bytes"))
    if error is not None:
        return Opened(Finding(Verdict.CORRUPT_PAYLOAD, f"zstd: {error}"))
    if not complete:
        return Opened(Finding(Verdict.TRUNCATED_PAYLOAD, "zstd frame is incomplete"))
    if len(body) != h.uncompressed_length:
        return Opened(Finding(Verdict.LENGTH_MISMATCH,
                              f"decompressed {len(body)} bytes, header says {h.uncompressed_length}"))
    count = body.count(b"\n") + 1 if body else 0
    if count != h.event_count:
        return Opened(Finding(Verdict.EVENT_COUNT_MISMATCH, f"payload holds {count} events, header says "
                                                            f"{h.event_count}"))
    return Opened(FINDING_OK, body)


def _bounded_decompress(payload: bytes, limit: int) -> tuple[bytes, bool, str | None]:
    """Decompress at most limit+1 bytes; return (body, frame complete, error text)."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out: list[bytes] = []
    produced = 0
    try:
        view = memoryview(payload)
        for start in range(0, len(payload), 1 << 16):
            chunk = dobj.decompress(view[start:start + (1 << 16)])
            out.append(chunk)
            produced += len(chunk)
            if produced > limit:
                return b"".join(out), False, None
            if dobj.eof:
                break
    except zstandard.ZstdError as exc:
        return b"".join(out), False, str(exc)
    return b"".join(out), bool(dobj.eof), None


def check_link(head: ChainHead, header: BatchHeader, digest: bytes, known_hash: bytes | None) -> Finding:
    """Place a batch in its stream's chain given the current head.

    `known_hash` is the hash already accepted at `header.seq`, when seq <= head.seq.
    """
    expected = head.seq + 1
    if header.seq == expected:
        if header.prev_hash != head.batch_hash:
            return Finding(Verdict.CHAIN_BROKEN, f"seq {header.seq} does not link to the hash of seq {head.seq}")
        return FINDING_OK
    if header.seq > expected:
        return Finding(Verdict.SEQ_GAP, f"expected seq {expected}, got {header.seq}: "
                                        f"{header.seq - expected} batch(es) missing")
    if known_hash is None:
        return Finding(Verdict.REORDERED, f"seq {header.seq} arrives after seq {head.seq}")
    if known_hash == digest:
        return Finding(Verdict.REPLAYED, f"seq {header.seq} was already accepted")
    return Finding(Verdict.FORKED, f"seq {header.seq} was already accepted with a different hash")


class ChainTracker:
    """Offline chain walk for one stream: reports every problem and keeps going."""

    def __init__(self) -> None:
        self.head = GENESIS
        self._seen: dict[int, bytes] = {}

    def observe(self, header: BatchHeader, digest: bytes) -> Finding:
        finding = check_link(self.head, header, digest, self._seen.get(header.seq))
        if finding.verdict in (Verdict.OK, Verdict.SEQ_GAP, Verdict.CHAIN_BROKEN):
            self.head = ChainHead(header.seq, digest)
            self._seen[header.seq] = digest
        return finding
