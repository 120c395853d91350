"""Ingest: verify one received batch against keys and chain, store it, and say what the ack is.

Pure decision (`decide`) apart from the store I/O (`Ingestor.handle`). Every rejection is a
security event: logged with node, stream, seq, peer and verdict, and recorded in the store.

With `bind_identity` (the server has [tls]), a batch is accepted only if its header's node id is the
node id of the client certificate it came with (`IDENTITY_MISMATCH` otherwise). A correctly signed
batch for a (node, stream, seq) already stored with another hash is equivocation: it is kept as
evidence (`equivocations`), never stored over the first, and rejected as `FORKED`.

Version 2 batches are checked against the node's key epochs (agent/keychain.py, kept by
aggregator/epochs.py): signed by the key of the epoch they claim, inside that epoch's seq range,
not from an older boot than its stream's newest batch (nor a known boot counter under another boot
id). A batch of an epoch not certified yet is answered `KEY_EPOCH_PENDING`
(retryable: not recorded, the agent resends after its certifying batch). Enrolment of a node's
epoch-0 key: `pinned` (trusted_keys_dir) or `tofu` (the first key a node presents with a valid client
certificate for its node id is pinned into trusted_keys_dir).

The store is an `IngestStore` (aggregator/store_api.py): the local store, or a JetStream store that
several aggregators share. When a shared store shows that another aggregator moved the chain on
(`ChainMoved`), the batch is verified again from a fresh read of the head and the node's epochs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.checkpoints import Checkpointer
from agent.aggregator.detection import DetectionShell
from agent.aggregator.enrollment import attest
from agent.aggregator.epochs import EpochIndex, EpochRecords, check_boot
from agent.aggregator.index_rows import index_rows
from agent.aggregator.store import StoredCheckpoint
from agent.aggregator.store_api import ChainMoved, IngestStore, StoreUnavailable
from agent.errors import StoreError
from agent.keychain import EpochCert, EpochChain, read_cert
from agent.keys import public_pem
from agent.normalize.common import Event, format_timestamp
from agent.seal import (
    Finding,
    Keyring,
    SealedBatch,
    Verdict,
    check_link,
    key_id_of,
    open_payload,
    verify_signature,
)
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

    # The aggregator's checkpoint key and origin, which also sign enrollment attestations.
    key: Ed25519PrivateKey
    origin: str


# A shared store's chain can move under a batch (another aggregator stored it): verify again, boundedly.
_MAX_ATTEMPTS = 8


class Ingestor:
    def __init__(self, store: IngestStore, keyring: Keyring, detection: DetectionShell | None = None, *,
                 checkpointer: Checkpointer | CheckpointSigner | None = None, bind_identity: bool = False,
                 enrollment: str = "pinned", trusted_keys_dir: Path | None = None) -> None:
        self.store = store
        signer = checkpointer
        self.epochs = EpochIndex(store, cache_chains=not store.shared, attest=None if signer is None else (
            lambda node, raw, how, detail: attest(signer.origin, signer.key, node, raw, how, detail)))
        self.enrollment = enrollment
        self.trusted_keys_dir = trusted_keys_dir
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

    def handle(self, raw: bytes, peer: str, cert_node: str | None = None, presented_key: bytes = b"") -> pb.Ack:
        """Verify, store and ack one batch; `cert_node` is the node id of the peer's client certificate,
        `presented_key` the raw enrolled public key the agent presents (used by `tofu` enrolment)."""
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
        for _ in range(_MAX_ATTEMPTS):
            try:
                return self._verify_and_store(raw, batch, peer, presented_key)
            except ChainMoved:
                self.epochs.forget(h.node_id)
                continue
        raise StoreUnavailable(f"chain {h.node_id}/{h.stream_id} kept moving under batch {h.seq}; not acked")

    def _verify_and_store(self, raw: bytes, batch: SealedBatch, peer: str, presented_key: bytes) -> pb.Ack:
        """One attempt; raises ChainMoved when a shared store moved on under it (verify again)."""
        h = batch.header
        chain, finding = self._check_key(batch, presented_key)
        if finding.verdict is Verdict.KEY_EPOCH_PENDING and self.store.shared:
            self.epochs.forget(h.node_id)  # another aggregator may have stored the certifying batch
            chain, finding = self._check_key(batch, presented_key)
        if finding.verdict is Verdict.KEY_EPOCH_PENDING:
            return self._pending(peer, batch, finding)
        if not finding.ok:
            return self._reject(peer, batch, finding)
        head = self.store.head(h.node_id, h.stream_id)
        known = self.store.known_hash(h.node_id, h.stream_id, h.seq) if h.seq <= head.seq else None
        link = check_link(head, h, batch.batch_hash, known)
        if not link.ok and link.verdict is not Verdict.REPLAYED and self.store.refresh(h.node_id, h.stream_id):
            raise ChainMoved(f"{h.node_id}/{h.stream_id} moved on")
        if link.verdict is Verdict.REPLAYED:
            self.stats.duplicates += 1
            return self._counted(h.node_id, _ack(h.stream_id, h.seq, pb.Ack.DUPLICATE))
        if chain is not None:
            stream_boot = self.epochs.stream_boot(h.node_id, h.stream_id)
            for check in (chain.place(h), check_boot(self.epochs.boot(h.node_id, h.boot_counter), stream_boot, h)):
                if not check.ok:
                    return self._reject(peer, batch, check)
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
            if h.next_key:
                return self._reject(peer, batch, Finding(Verdict.MALFORMED, "a certifying batch without its payload"))
            self._remember_key(h.node_id, h.key_id, chain)
            batch_id = self.store.append(raw, batch, [], self._records(batch, None))
            if h.version >= 2:
                self.epochs.committed(h.node_id, h, None, None)
            self._after_append()
            self.stats.stored_batches += 1
            self.stats.dropped_batches += 1
            log.warning("batch stored without its payload (dropped by the agent: spool full)",
                        extra={"node": h.node_id, "stream": h.stream_id, "seq": h.seq, "events": h.event_count})
            return self._counted(h.node_id, self._stored(h.stream_id, h.seq, batch_id))
        opened = open_payload(batch)
        if not opened.finding.ok or opened.body is None:
            return self._reject(peer, batch, opened.finding)
        cert: EpochCert | None = None
        if h.next_key and chain is not None:
            read = read_cert(h, opened.body)
            if isinstance(read, Finding):
                return self._reject(peer, batch, read)
            trial = EpochChain(dict(chain.keys), dict(chain.ends))
            certified = trial.certify(h, read)
            if not certified.ok:
                return self._reject(peer, batch, certified)
            cert, chain = read, trial
        self._remember_key(h.node_id, h.key_id, chain)
        rows = index_rows(opened.body)
        batch_id = self.store.append(raw, batch, rows, self._records(batch, cert))
        if h.version >= 2:
            self.epochs.committed(h.node_id, h, chain, cert)
            if cert is not None:
                self._remember_key(h.node_id, key_id_of(cert.key), chain)
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

    def _check_key(self, batch: SealedBatch, presented_key: bytes) -> tuple[EpochChain | None, Finding]:
        """The signature check: by the key of the claimed epoch (version 2), else by the enrolled key."""
        h = batch.header
        if h.version < 2:
            if self.epochs.chain(h.node_id) is not None:
                return None, Finding(Verdict.KEY_EPOCH_MISUSE, "a version 1 batch (no key epoch) from a node that "
                                                               "signs by key epochs")
            return None, verify_signature(batch, self.keyring)
        chain = self._chain_for(batch, presented_key)
        if isinstance(chain, Finding):
            return None, chain
        key = chain.key_for(h)
        if isinstance(key, Finding):
            return chain, key
        return chain, verify_signature(batch, {h.node_id: {h.key_id: key}})

    def _chain_for(self, batch: SealedBatch, presented_key: bytes) -> EpochChain | Finding:
        """The node's key epochs, enrolling its epoch-0 key at its first version 2 batch."""
        h = batch.header
        chain = self.epochs.chain(h.node_id)
        pinned = self.keyring.get(h.node_id)
        if chain is not None:
            # Removing <node>.pub from trusted_keys_dir (and SIGHUP) cuts a node off, whatever its epoch.
            if not pinned:
                return Finding(Verdict.UNKNOWN_NODE, f"node {h.node_id!r} is no longer enrolled (no "
                                                     f"{h.node_id}.pub in trusted_keys_dir)")
            if key_id_of(chain.keys[0]) not in pinned:
                return Finding(Verdict.UNKNOWN_KEY, f"the enrolled key of node {h.node_id!r} is not the key its "
                                                    "epoch chain starts with; enrol a rebuilt node under a new node id")
            return chain
        if pinned:
            key = pinned.get(h.key_id) if h.key_epoch == 0 else None
            if key is None:
                return Finding(Verdict.UNKNOWN_KEY, f"key {h.key_id!r} at epoch {h.key_epoch} is not the enrolled "
                                                    f"key of node {h.node_id!r}")
            how, detail = "pinned", "trusted_keys_dir"
        elif self.enrollment == "tofu" and self.bind_identity:
            if h.key_epoch != 0 or len(presented_key) != 32:
                return Finding(Verdict.UNKNOWN_NODE, f"node {h.node_id!r} is not enrolled; trust on first use "
                                                     "needs its epoch-0 key presented with a batch of epoch 0")
            key = Ed25519PublicKey.from_public_bytes(presented_key)
            if key_id_of(key) != h.key_id:
                return Finding(Verdict.UNKNOWN_KEY, "the presented key is not the key that signed the batch")
            if not verify_signature(batch, {h.node_id: {h.key_id: key}}).ok:
                return Finding(Verdict.BAD_SIGNATURE, "the batch does not verify with the presented key")
            how, detail = "tofu", "first key presented with a valid client certificate"
        else:
            return Finding(Verdict.UNKNOWN_NODE, f"node {h.node_id!r} has no enrolled key")
        enrolled = self.epochs.enrol(h.node_id, key, how, detail)
        if enrolled is None:
            raise ChainMoved(f"node {h.node_id!r} was enrolled meanwhile")
        if how == "tofu":
            self._pin(h.node_id, key)
        return enrolled

    def _pin(self, node: str, key: Ed25519PublicKey) -> None:
        """Write a first-seen key into trusted_keys_dir (0644), so a restart and `verify --keys` know it."""
        if self.trusted_keys_dir is None:
            return
        path = self.trusted_keys_dir / f"{node}.pub"
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(public_pem(key))
            tmp.chmod(0o644)
            tmp.replace(path)
        except OSError as exc:  # e.g. a read-only folder: the store's node_keys row still holds the pin
            log.error("trust on first use: cannot write the pinned key", extra={"path": str(path),
                                                                                "reason": exc.strerror})
        self.keyring = {**self.keyring, node: {key_id_of(key): key}}

    def _records(self, batch: SealedBatch, cert: EpochCert | None) -> EpochRecords | None:
        """The boot and epoch the batch brings, stored with it (version 2 only)."""
        h = batch.header
        return self.epochs.records(h.node_id, h, cert) if h.version >= 2 else None

    def _pending(self, peer: str, batch: SealedBatch, finding: Finding) -> pb.Ack:
        """Not stored, not a security event: the agent resends once the certifying batch is in."""
        h = batch.header
        log.info("batch waits for its key epoch", extra={"node": h.node_id, "stream": h.stream_id, "seq": h.seq,
                                                         "epoch": h.key_epoch, "peer": peer})
        return self._counted(h.node_id, _ack(h.stream_id, h.seq, pb.Ack.REJECTED, finding))

    def _remember_key(self, node: str, key_id: str, chain: EpochChain | None = None) -> None:
        """Keep the public key beside the batches it signs, for offline `verify`."""
        if (node, key_id) in self._remembered:
            return
        key = next((k for k in chain.keys.values() if key_id_of(k) == key_id), None) if chain else None
        if key is None:
            key = self.keyring[node][key_id]
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
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
            if finding.verdict is Verdict.KEY_EPOCH_MISUSE:
                action = "key_epoch_misuse"
            event = security_event(action, node, stream, seq, finding.verdict.name, finding.reason, peer)
            if batch is not None:
                event["logseal"]["key_id"] = batch.header.key_id
                event["logseal"]["key_epoch"] = batch.header.key_epoch
            self.detection.submit_event(event)
        return self._counted(node or "?", _ack(stream, seq, pb.Ack.REJECTED, finding))

    def _counted(self, node: str, ack: pb.Ack) -> pb.Ack:
        """Count the ack, and show the latest signed checkpoint on it (every node witnesses the log)."""
        last = self.checkpointer.last if self.checkpointer is not None else None
        if last is not None:
            ack.checkpoint = last.note
        key = (node, pb.Ack.Status.Name(ack.status).lower())
        self.acks_by_status[key] = self.acks_by_status.get(key, 0) + 1
        return ack
