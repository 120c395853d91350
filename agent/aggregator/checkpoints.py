"""Signed checkpoints of the store's Merkle log: when to sign, what, and where to keep them.

Invariants:
- A checkpoint is signed only for a tree that extends the last signed one: before signing, the
  Merkle append state saved with the previous checkpoint is extended by the leaves stored since and
  must reach the store's current root. A store that is smaller than its last checkpoint, or whose
  tree does not extend it, gets no new signature (and the aggregator does not start on it).
- A checkpoint is signed only when the tree grew (never two for one size), after
  `checkpoint_every` new batches, after `checkpoint_interval_s` when anything arrived, and at
  shutdown. Each is kept in the store's `checkpoints` table together with its append state, and
  written to `witness_dir/<size, 20 digits>.checkpoint` (created once, never overwritten).
- The note's key name is the log's origin; the origin is recorded in the store at first start and
  never changes.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent.aggregator.store import Store, StoredCheckpoint
from agent.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint, time_extension
from agent.config import AggregatorConfig
from agent.errors import ConfigError, StoreError
from agent.keys import load_or_create_key, public_pem

log = logging.getLogger(__name__)

AGGREGATOR_KEY = "aggregator.key"
AGGREGATOR_PUB = "aggregator.pub"
WITNESS_SUFFIX = ".checkpoint"


def witness_file_name(size: int) -> str:
    return f"{size:020d}{WITNESS_SUFFIX}"


def resolve_origin(store: Store, configured: str, host: str) -> str:
    """The log's origin: as recorded in the store; set at first start from config or the host name."""
    row = store.db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
    recorded = None if row is None else str(row[0])
    if recorded is not None:
        if configured and configured != recorded:
            raise ConfigError(f"origin: the store's log is named {recorded!r}; a log's origin never changes, so "
                              f"{configured!r} is refused (remove the key or set it to {recorded!r})")
        return recorded
    origin = configured or f"logseal/{host}"
    store.db.execute("INSERT INTO meta VALUES ('origin', ?)", (origin,))
    return origin


def aggregator_signing_key(key_path: Path, pub_path: Path) -> Ed25519PrivateKey:
    """The aggregator's checkpoint key (created 0600 on first start), its public half kept current at
    `pub_path` for auditors and `verify`."""
    key, created = load_or_create_key(key_path)
    if created:
        log.info("created the aggregator's checkpoint key", extra={"path": str(key_path)})
    pem = public_pem(key.public_key())
    if not pub_path.exists() or pub_path.read_bytes() != pem:
        tmp = pub_path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, pub_path)
    return key


class Checkpointer:
    """Signs checkpoints for one store; called from the store's single writer thread."""

    def __init__(self, store: Store, key: Ed25519PrivateKey, origin: str, *, every: int = 1000,
                 interval_s: int = 60, witness_dir: Path | None = None, now_ns: int = 0) -> None:
        self.store = store
        self.key = key
        self.origin = origin
        self.every = every
        self.interval_ns = interval_s * 1_000_000_000
        self.witness_dir = witness_dir
        self.signed = 0
        self._last = store.last_checkpoint()
        self._last_time_ns = now_ns
        if self._last is not None:
            try:
                cp = open_checkpoint(self._last.note, origin, key.public_key())
            except CheckpointError as exc:
                raise StoreError(f"the store's last checkpoint does not verify with the aggregator key ({exc}); "
                                 "the key or the store was replaced: run `logseal verify` on it") from None
            if (cp.size, cp.root) != (self._last.size, self._last.root):
                raise StoreError("the store's last checkpoint row differs from its signed note; "
                                 "run `logseal verify` on it")
            self._check_extends(self._last)

    @classmethod
    def from_config(cls, store: Store, config: AggregatorConfig, now_ns: int) -> Checkpointer:
        key = aggregator_signing_key(config.aggregator_key or store.directory / AGGREGATOR_KEY,
                                     store.directory / AGGREGATOR_PUB)
        origin = resolve_origin(store, config.origin, socket.gethostname())
        if config.witness_dir is not None:
            config.witness_dir.mkdir(parents=True, exist_ok=True)
        return cls(store, key, origin, every=config.checkpoint_every, interval_s=config.checkpoint_interval_s,
                   witness_dir=config.witness_dir, now_ns=now_ns)

    @property
    def last(self) -> StoredCheckpoint | None:
        return self._last

    def _check_extends(self, previous: StoredCheckpoint) -> None:
        """Refuse to go on unless the store's tree is the previous checkpoint's tree plus new leaves."""
        tree = self.store.tree
        if tree.size < previous.size:
            raise StoreError(f"rollback: the store holds {tree.size} batches but its checkpoint signed "
                             f"{previous.size}; no checkpoint is signed over it: run `logseal verify`")
        state = merkle.MerkleState.from_bytes(previous.state)
        if state.size != previous.size or state.root() != previous.root:
            raise StoreError("the Merkle state kept with the last checkpoint does not give its root; "
                             "run `logseal verify` on the store")
        state.extend(self.store.leaf_hashes(previous.size, tree.size))
        if state.root() != tree.root():
            raise StoreError(f"the store's tree of {tree.size} batches does not extend its checkpoint of "
                             f"{previous.size}; no checkpoint is signed over it: run `logseal verify`")

    def after_append(self, now_ns: int) -> None:
        last_size = self._last.size if self._last else 0
        if self.store.tree.size - last_size >= self.every:
            self.sign(now_ns)

    def tick(self, now_ns: int) -> None:
        """Sign if batches arrived since the last checkpoint and the interval has passed."""
        last_size = self._last.size if self._last else 0
        if self.store.tree.size > last_size and now_ns - self._last_time_ns >= self.interval_ns:
            self.sign(now_ns)

    def sign(self, now_ns: int) -> StoredCheckpoint | None:
        """Sign the current tree if it grew since the last checkpoint; returns what was signed."""
        tree = self.store.tree
        if self._last is not None:
            if tree.size == self._last.size:
                return None
            self._check_extends(self._last)
        elif tree.size == 0:
            return None
        cp = Checkpoint(self.origin, tree.size, tree.root(), (time_extension(now_ns),))
        note = sign_checkpoint(cp, self.origin, self.key)
        stored = StoredCheckpoint(cp.size, cp.root, note, now_ns, tree.to_bytes())
        self.store.add_checkpoint(stored.size, stored.root, stored.note, stored.time_ns, stored.state)
        self._last, self._last_time_ns = stored, now_ns
        self.signed += 1
        log.info("checkpoint signed", extra={"origin": self.origin, "size": cp.size, "root": cp.root.hex()})
        if self.witness_dir is not None:
            self._witness(stored)
        return stored

    def _witness(self, cp: StoredCheckpoint) -> None:
        path = self.witness_dir / witness_file_name(cp.size) if self.witness_dir else None
        assert path is not None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(cp.note)
                f.flush()
                os.fsync(f.fileno())
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            if path.read_text() != cp.note:
                log.error("witness already holds a different checkpoint of this size; not overwritten",
                          extra={"path": str(path)})
        except OSError as exc:
            log.error("checkpoint not written to the witness; it is kept in the store",
                      extra={"path": str(path), "reason": exc.strerror})
