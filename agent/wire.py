"""Conversion between sealed batches and their protobuf wire form (the encoder, apart from transport)."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.seal import BatchHeader, SealedBatch, batch_hash

INGEST_STREAM_METHOD = "/logseal.v1.Ingest/Stream"
CONSISTENCY_METHOD = "/logseal.v1.Ingest/Consistency"
# Stream metadata: the node's enrolled (epoch-0) public key, raw hex, for trust-on-first-use enrolment.
ENROLLED_KEY_METADATA = "logseal-enrolled-key"


class WireError(ValueError):
    """Bytes that are not a well-formed Batch message."""


def batch_to_bytes(batch: SealedBatch) -> bytes:
    h = batch.header
    message = pb.Batch(
        header=pb.BatchHeader(
            version=h.version,
            node_id=h.node_id,
            stream_id=h.stream_id,
            seq=h.seq,
            prev_hash=h.prev_hash,
            key_id=h.key_id,
            event_count=h.event_count,
            first_event_time_ns=h.first_event_time_ns,
            last_event_time_ns=h.last_event_time_ns,
            payload_sha256=h.payload_sha256,
            uncompressed_length=h.uncompressed_length,
            key_epoch=h.key_epoch,
            boot_id=h.boot_id,
            boot_counter=h.boot_counter,
            next_key=h.next_key,
        ),
        payload=batch.payload,
        signature=batch.signature,
        payload_dropped=batch.payload_dropped,
    )
    data: bytes = message.SerializeToString()
    return data


def batch_from_bytes(raw: bytes) -> SealedBatch:
    try:
        message = pb.Batch.FromString(raw)
    except DecodeError as exc:
        raise WireError(f"not a Batch message: {exc}") from None
    if not message.HasField("header"):
        raise WireError("Batch message has no header")
    m = message.header
    header = BatchHeader(
        version=m.version,
        node_id=m.node_id,
        stream_id=m.stream_id,
        seq=m.seq,
        prev_hash=m.prev_hash,
        key_id=m.key_id,
        event_count=m.event_count,
        first_event_time_ns=m.first_event_time_ns,
        last_event_time_ns=m.last_event_time_ns,
        payload_sha256=m.payload_sha256,
        uncompressed_length=m.uncompressed_length,
        key_epoch=m.key_epoch,
        boot_id=m.boot_id,
        boot_counter=m.boot_counter,
        next_key=m.next_key,
    )
    return SealedBatch(header=header, payload=message.payload, signature=message.signature,
                       batch_hash=batch_hash(header), payload_dropped=message.payload_dropped)


def without_payload(raw: bytes) -> bytes:
    """The same batch with its payload dropped: still signed, still chained, marked as dropped."""
    batch = batch_from_bytes(raw)
    return batch_to_bytes(replace(batch, payload=b"", payload_dropped=True))
