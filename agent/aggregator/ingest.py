"""Ingest: verify one received batch against keys and chain, store it, and say what the ack is.

Pure decision (`decide`) apart from the store I/O (`Ingestor.handle`). Every rejection is a
security event: logged with node, stream, seq, peer and verdict, and recorded in the store.

With `bind_identity` (the server has [tls]), a batch is accepted only if its header's node id is the
node id of the client certificate it came with (`IDENTITY_MISMATCH` otherwise). A correctly signed
batch for a (node, stream, seq) already stored with another hash is equivocation: it is kept as
evidence (`equivocations`), never stored over the first, and rejected as `FORKED`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.checkpoints import Checkpointer
from agent.aggregator.detection import DetectionShell
from agent.aggregator.index_rows import index_rows
from agent.aggregator.store import StoredCheckpoint
from agent.aggregator.store_api import ChainMoved, IngestStore, StoreUnavailable
from agent.errors import StoreError
from agent.normalize.common import Event, format_timestamp
from agent.seal import Finding, Keyring, SealedBatch, Verdict, check_link, open_payload, verify_signature
from agent.wire import WireError, batch_from_bytes

log = logging.getLogger("logseal.security")


@dataclass
class IngestStats:
    stored_batches: int = 0
    stored_events: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped_batches: int = 0
    bytes_in: int = 0
    equivocations: int = 0


def _ack(stream: str, seq: int, status: int, finding: Finding | None = None) -> pb.Ack:
    if finding is None:
        return pb.Ack(stream_id=stream, seq=seq, status=status)  # type: ignore[arg-type]
    return pb.Ack(stream_id=stream, seq=seq, status=status,  # type: ignore[arg-type]
                  verdict=finding.verdict.name, reason=finding.reason)


_CHAIN_VERDICTS = frozenset([Verdict.CHAIN_BROKEN, Verdict.SEQ_GAP, Verdict.FORKED, Verdict.REORDERED])


def security_event(action: str, node: str, stream: str, seq: int, verdict: str, reason: str, peer: str) -> Event:
    """An event of the aggregator's own (dataset `logseal.security`) for detection rules."""
    now = format_timestamp(dt.datetime.now(dt.UTC))
    return {"@timestamp": now, "event": {"kind": "event", "dataset": "logseal.security", "action": action,
                                         "outcome": "failure", "category": ["configuration"], "type": ["denied"],
                                         "id": f"security:{node}:{stream}:{seq}:{time.time_ns()}"},
            "message": f"batch {node}/{stream}#{seq} rejected: {verdict}: {reason}",
            "logseal": {"node": node, "stream": stream, "seq": seq, "verdict": verdict, "peer": peer}}


class CheckpointSigner(Protocol):
    @property
    def last(self) -> StoredCheckpoint | None: ...

    def after_append(self, now_ns: int) -> None: ...


# A shared store's chain can move under a batch (another aggregator stored it): verify again, boundedly.
_MAX_ATTEMPTS = 8


class Ingestor:
    def __init__(self, store: IngestStore, keyring: Keyring, detection: DetectionShell | None = None, *,
                 checkpointer: Checkpointer | CheckpointSigner | None = None, bind_identity: bool = False) -> None:
        self.store = store
        self.keyring = keyring
        self.detection = detection
        self.checkpointer = checkpointer
        self.bind_identity = bind_identity
        self.stats = IngestStats()
        self.rejections_by_verdict: dict[tuple[str, str], int] = {}
        self.acks_by_status: dict[tuple[str, str], int] = {}
        self.last_batch_unix: dict[str, float] = {}
        self.events_by_dataset: dict[str, int] = {}
        self._remembered: set[tuple[str, str]] = set()

    def handle(self, raw: bytes, peer: str, cert_node: str | None = None) -> pb.Ack:
        """Verify, store and ack one batch; `cert_node` is the node id of the peer's client certificate."""
        self.stats.bytes_in += len(raw)
        try:
            batch = batch_from_bytes(raw)
        except WireError as exc:
            return self._reject(peer, None, Finding(Verdict.MALFORMED, str(exc)))
        h = batch.header
        if self.bind_identity and h.node_id != cert_node:
            named = f"node {cert_node!r}" if cert_node else "no node (no logseal://node/ URI SAN)"
            return self._reject(peer, batch, Finding(Verdict.IDENTITY_MISMATCH,
                                                     f"batch for node {h.node_id!r} sent with a client certificate "
                                                     f"naming {named}"))
        finding = verify_signature(batch, self.keyring)
        if not finding.ok:
            return self._reject(peer, batch, finding)
        for _ in range(_MAX_ATTEMPTS):
            try:
                return self._link_and_store(raw, batch, peer)
            except ChainMoved:
                continue
        raise StoreUnavailable(f"chain {h.node_id}/{h.stream_id} kept moving under batch {h.seq}; not acked")

    def _link_and_store(self, raw: bytes, batch: SealedBatch, peer: str) -> pb.Ack:
        h = batch.header
        head = self.store.head(h.node_id, h.stream_id)
        known = self.store.known_hash(h.node_id, h.stream_id, h.seq) if h.seq <= head.seq else None
        link = check_link(head, h, batch.batch_hash, known)
        if not link.ok and link.verdict is not Verdict.REPLAYED and self.store.refresh(h.node_id, h.stream_id):
            raise ChainMoved(f"{h.node_id}/{h.stream_id} moved on")
        if link.verdict is Verdict.REPLAYED:
            self.stats.duplicates += 1
            return self._counted(h.node_id, _ack(h.stream_id, h.seq, pb.Ack.DUPLICATE))
        if link.verdict is Verdict.FORKED and known is not None:
            if self.store.record_equivocation(peer, raw, batch, known):
                self.stats.equivocations += 1
            log.error("equivocation: a second signed batch for a stored seq, kept as evidence",
                      extra={"node": h.node_id, "stream": h.stream_id, "seq": h.seq, "stored_hash": known.hex(),
                             "new_hash": batch.batch_hash.hex(), "peer": peer})
        if not link.ok:
            return self._reject(peer, batch, link)
        if batch.payload_dropped:
            # The agent's spool was full: a signed header without its events. Stored as declared
            # loss (the stream carries a gap record); the chain stays whole.
            if batch.payload:
                return self._reject(peer, batch, Finding(Verdict.MALFORMED, "a dropped batch carries a payload"))
            self._remember_key(h.node_id, h.key_id)
            batch_id = self.store.append(raw, batch, [])
            self._after_append()
            self.stats.stored_batches += 1
            self.stats.dropped_batches += 1
            log.warning("batch stored without its payload (dropped by the agent: spool full)",
                        extra={"node": h.node_id, "stream": h.stream_id, "seq": h.seq, "events": h.event_count})
            return self._counted(h.node_id, self._stored(h.stream_id, h.seq, batch_id))
        opened = open_payload(batch)
        if not opened.finding.ok or opened.body is None:
            return self._reject(peer, batch, opened.finding)
        self._remember_key(h.node_id, h.key_id)
        rows = index_rows(opened.body)
        batch_id = self.store.append(raw, batch, rows)
        for row in rows:
            dataset = row[2] or "unknown"
            self.events_by_dataset[dataset] = self.events_by_dataset.get(dataset, 0) + 1
        self._after_append()
        self.stats.stored_batches += 1
        self.stats.stored_events += h.event_count
        self.last_batch_unix[h.node_id] = time.time()
        if self.detection is not None:
            self.detection.submit_body(opened.body)
        return self._counted(h.node_id, self._stored(h.stream_id, h.seq, batch_id))

    def _stored(self, stream: str, seq: int, batch_id: int) -> pb.Ack:
        """A STORED ack naming the batch's Merkle leaf."""
        ack = _ack(stream, seq, pb.Ack.STORED)
        ack.leaf_index = batch_id - 1
        return ack

    def _after_append(self) -> None:
        if self.checkpointer is not None:
            try:
                self.checkpointer.after_append(time.time_ns())
            except StoreError as exc:  # the batch is stored; the tree gets no signature it does not deserve
                log.error("checkpoint refused", extra={"reason": str(exc)})

    def _remember_key(self, node: str, key_id: str) -> None:
        """Keep the public key beside the batches it signs, for offline `verify`."""
        if (node, key_id) not in self._remembered:
            pem = self.keyring[node][key_id].public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
            self.store.remember_key(node, key_id, pem)
            self._remembered.add((node, key_id))

    def _reject(self, peer: str, batch: SealedBatch | None, finding: Finding) -> pb.Ack:
        self.stats.rejected += 1
        node = batch.header.node_id if batch else ""
        stream = batch.header.stream_id if batch else ""
        seq = batch.header.seq if batch else 0
        log.warning("batch rejected", extra={"verdict": finding.verdict.name, "node": node, "stream": stream,
                                             "seq": seq, "peer": peer, "reason": finding.reason})
        self.store.record_rejection(peer, node, stream, seq, finding.verdict.name, finding.reason)
        key = (node or "?", finding.verdict.name)
        self.rejections_by_verdict[key] = self.rejections_by_verdict.get(key, 0) + 1
        if self.detection is not None:
            action = "chain_break" if finding.verdict in _CHAIN_VERDICTS else "batch_rejected"
            self.detection.submit_event(security_event(action, node, stream, seq, finding.verdict.name,
                                                       finding.reason, peer))
        return self._counted(node or "?", _ack(stream, seq, pb.Ack.REJECTED, finding))

    def _counted(self, node: str, ack: pb.Ack) -> pb.Ack:
        """Count the ack, and show the latest signed checkpoint on it (every node witnesses the log)."""
        last = self.checkpointer.last if self.checkpointer is not None else None
        if last is not None:
            ack.checkpoint = last.note
        key = (node, pb.Ack.Status.Name(ack.status).lower())
        self.acks_by_status[key] = self.acks_by_status.get(key, 0) + 1
        return ack
