"""Signed checkpoints of the shared Merkle log of a JetStream store.

Every aggregator of one stream serves one log, so they share its origin and its checkpoint key:
the first aggregator records both in the bucket (`log`), and an aggregator with another key or
origin refuses to start. Checkpoints are published on `S.checkpoint` with the expected last
sequence of that subject, so two aggregators never publish two checkpoints over one another; the
one that loses re-reads the winner's. The tree only grows (its state is extended by
compare-and-set), so a new checkpoint extends the last one; `verify --jetstream` re-checks every
checkpoint's root against the stream.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.aggregator.checkpoints import AGGREGATOR_KEY, AGGREGATOR_PUB, aggregator_signing_key, witness_file_name
from agent.aggregator.jetstream import LOG_KEY, JetStreamStore
from agent.aggregator.store import StoredCheckpoint
from agent.aggregator.store_api import StoreUnavailable
from agent.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint, time_extension
from agent.config import AggregatorConfig
from agent.errors import ConfigError, StoreError
from agent.keys import public_pem

log = logging.getLogger(__name__)


class JetStreamCheckpointer:
    """Signs checkpoints of the stream's shared tree; called from the aggregator's store thread."""

    def __init__(self, store: JetStreamStore, key: Ed25519PrivateKey, origin: str, *, every: int = 1000,
                 interval_s: int = 60, witness_dir: Path | None = None, now_ns: int = 0) -> None:
        self.store = store
        self.key = key
        self.origin = origin
        self.every = every
        self.interval_ns = interval_s * 1_000_000_000
        self.witness_dir = witness_dir
        self.signed = 0
        self._last_time_ns = now_ns
        self._last: StoredCheckpoint | None = None
        self._last_sseq = 0
        self._read_last()

    @classmethod
    def from_config(cls, store: JetStreamStore, config: AggregatorConfig, now_ns: int) -> JetStreamCheckpointer:
        config.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = aggregator_signing_key(config.aggregator_key or config.store_dir / AGGREGATOR_KEY,
                                     config.store_dir / AGGREGATOR_PUB)
        pem = public_pem(key.public_key())
        origin = config.origin or f"logseal/{store.names.stream}"
        wanted = orjson.dumps({"origin": origin, "pub": pem.decode()})
        held = orjson.loads(store.run(store.log.put_once(LOG_KEY, wanted)))
        if held["pub"] != pem.decode():
            raise ConfigError(f"aggregator_key: the log of stream {store.names.stream!r} is signed with another key; "
                              "every aggregator of one stream shares its checkpoint key: set aggregator_key to the "
                              "same file on each")
        if held["origin"] != origin:
            raise ConfigError(f"origin: the log of stream {store.names.stream!r} is named {held['origin']!r}; set "
                              f"origin = {held['origin']!r} (or leave it out) on every aggregator of it")
        if config.witness_dir is not None:
            config.witness_dir.mkdir(parents=True, exist_ok=True)
        return cls(store, key, origin, every=config.checkpoint_every, interval_s=config.checkpoint_interval_s,
                   witness_dir=config.witness_dir, now_ns=now_ns)

    @property
    def last(self) -> StoredCheckpoint | None:
        return self._last

    def _read_last(self) -> None:
        found = self.store.run(self.store.log.last_message(self.store.names.checkpoints))
        if found is None:
            return
        sseq, data = found
        note = data.decode(errors="replace")
        try:
            cp = open_checkpoint(note, self.origin, self.key.public_key())
        except CheckpointError as exc:
            raise StoreError(f"the stream's last checkpoint does not verify with the aggregator key ({exc}); "
                             "run `logseal verify --jetstream` on it") from None
        self._last = StoredCheckpoint(cp.size, cp.root, note, cp.time_ns or 0, b"")
        self._last_sseq = sseq

    def after_append(self, now_ns: int) -> None:
        last_size = self._last.size if self._last else 0
        if self.store.tree.size - last_size >= self.every:
            self._sign_now(now_ns)

    def tick(self, now_ns: int) -> None:
        if now_ns - self._last_time_ns >= self.interval_ns:
            self._sign_now(now_ns)

    def _sign_now(self, now_ns: int) -> None:
        """Sign unless the cluster cannot answer now (e.g. electing a leader): a later call signs."""
        try:
            self.sign(now_ns)
        except StoreUnavailable as exc:
            log.warning("checkpoint not signed now; will retry", extra={"reason": str(exc)})

    def sign(self, now_ns: int) -> StoredCheckpoint | None:
        """Sign the shared tree if it grew since the last checkpoint of the stream; returns what was signed."""
        tree = self.store.merkle_state()
        if tree.size == 0 or (self._last is not None and tree.size <= self._last.size):
            return None
        cp = Checkpoint(self.origin, tree.size, tree.root(), (time_extension(now_ns),))
        note = sign_checkpoint(cp, self.origin, self.key)
        sseq = self.store.run(self.store.log.publish_after(self.store.names.checkpoints, note.encode(),
                                                           f"cp.{cp.size}", self._last_sseq))
        if sseq is None:  # another aggregator signed first
            self._read_last()
            return None
        stored = StoredCheckpoint(cp.size, cp.root, note, now_ns, tree.to_bytes())
        self._last, self._last_sseq, self._last_time_ns = stored, sseq, now_ns
        self.signed += 1
        log.info("checkpoint signed", extra={"origin": self.origin, "size": cp.size, "root": cp.root.hex()})
        if self.witness_dir is not None:
            self._witness(stored)
        return stored

    def _witness(self, cp: StoredCheckpoint) -> None:
        assert self.witness_dir is not None
        path = self.witness_dir / witness_file_name(cp.size)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(cp.note)
                f.flush()
                os.fsync(f.fileno())
        except FileExistsError:
            log.info("witness already holds a checkpoint of this size", extra={"path": str(path)})
        except OSError as exc:
            log.error("checkpoint not written to the witness", extra={"path": str(path), "reason": exc.strerror})
