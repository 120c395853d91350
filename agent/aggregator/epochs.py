"""Per-node key epochs and boots as the Ingestor follows them, over what the store keeps of them.

The store keeps, per node, one record per epoch (its public key; how it came: `pinned` from
trusted_keys_dir, `tofu` first key presented with a valid client certificate, `certified` by the
node's certifying batch, named in `detail`; for a certified epoch, the stream ends of the epoch before
it) and each boot counter with its boot id. A certified epoch and a new boot are handed to the store
with the batch that brings them (`EpochRecords`), so a crash cannot keep one without the other: the
local store writes them in the batch's SQLite transaction (tables `node_keys`, `node_boots`, below),
the JetStream store derives them again from the stream's last message when its bucket is behind.
Enrolment happens once, before the node's first batch is stored, and is logged as a security record.

Epoch and boot records are only ever added, never changed, so what is cached here is a prefix of the
truth; `forget` drops a node's cache when a shared store shows another aggregator moved on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.keychain import EpochCert, EpochChain
from agent.seal import FINDING_OK, BatchHeader, Finding, Verdict, key_id_of, raw_public

log = logging.getLogger("logseal.security")

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_keys (
    node TEXT NOT NULL, epoch INTEGER NOT NULL, key_id TEXT NOT NULL, public_key BLOB NOT NULL,
    ends TEXT NOT NULL,            -- JSON {stream: last seq} of epoch-1 (certified epochs)
    how TEXT NOT NULL, detail TEXT NOT NULL, recorded_ns INTEGER NOT NULL,
    PRIMARY KEY (node, epoch)
);
CREATE TABLE IF NOT EXISTS enrollments (  -- the aggregator's signature over each node's epoch-0 row
    node TEXT PRIMARY KEY, attestation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_boots (
    node TEXT NOT NULL, boot_counter INTEGER NOT NULL, boot_id BLOB NOT NULL, first_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (node, boot_counter)
);
"""

Statement = tuple[str, tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Boot:
    counter: int
    boot_id: bytes


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """One epoch of a node: its raw public key, the stream ends of the epoch before, and how it came."""

    epoch: int
    public_key: bytes
    ends: Mapping[str, int]
    how: str
    detail: str
    # Epoch 0: the aggregator's signature over the enrollment (agent/aggregator/enrollment.py).
    attestation: str = ""

    @property
    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


@dataclass(frozen=True, slots=True)
class EpochRecords:
    """What one batch brings to its node's records, stored with the batch: a new boot, a certified epoch."""

    node: str = ""
    boots: Sequence[Boot] = field(default_factory=tuple)
    certified: EpochRecord | None = None


class EpochStore(Protocol):
    """What the Ingestor's epoch checks read from a store (both stores implement it)."""

    @property
    def shared(self) -> bool:
        """Other aggregators write this store too: what was read of it may be stale."""
        ...

    def epoch_records(self, node: str) -> list[EpochRecord]:
        """The node's epochs as stored, in epoch order (empty before its enrolment)."""
        ...

    def enrol(self, node: str, record: EpochRecord) -> bool:
        """Record the epoch-0 key; False when the node was enrolled meanwhile (read the records again)."""
        ...

    def boot(self, node: str, counter: int) -> Boot | None:
        """The boot the node had under `counter`, if a batch of it was stored."""
        ...

    def head_header(self, node: str, stream: str) -> BatchHeader | None:
        """The header of the stream's newest stored batch."""
        ...


def check_boot(seen: Boot | None, stream_head: Boot | None, header: BatchHeader) -> Finding:
    """Replayed across restarts: a boot counter already seen under another boot id, or a new batch of a
    stream claiming an older boot than the stream's newest stored batch (`stream_head`).

    A batch of an older boot that is new to its stream is honest late delivery (spooled before a
    restart, other streams went on), so the order is judged per stream, where seqs follow boots."""
    if seen is not None and seen.boot_id != header.boot_id:
        return Finding(Verdict.REPLAYED, f"boot {header.boot_counter} was seen with boot id "
                                         f"{seen.boot_id.hex()}, this batch names {header.boot_id.hex()}")
    if stream_head is not None and header.boot_counter < stream_head.counter:
        return Finding(Verdict.REPLAYED, f"sealed in boot {header.boot_counter}, but {header.stream_id} already "
                                         f"holds batches of the node's later boot {stream_head.counter}")
    return FINDING_OK


def chain_of(records: Sequence[EpochRecord]) -> EpochChain | None:
    if not records:
        return None
    chain = EpochChain({r.epoch: r.key for r in records})
    for r in records:
        if r.epoch > 0:
            chain.ends[r.epoch - 1] = dict(r.ends)
    return chain


def cert_record(cert: EpochCert, where: str) -> EpochRecord:
    return EpochRecord(cert.epoch, raw_public(cert.key), dict(cert.ends), "certified", where)


# The local store's tables.

def sqlite_epoch_records(db: sqlite3.Connection, node: str) -> list[EpochRecord]:
    rows = db.execute("SELECT k.epoch, k.public_key, k.ends, k.how, k.detail, e.attestation FROM node_keys k "
                      "LEFT JOIN enrollments e ON e.node = k.node AND k.epoch = 0 WHERE k.node=? ORDER BY k.epoch",
                      (node,)).fetchall()
    return [EpochRecord(int(r[0]), bytes(r[1]), orjson.loads(r[2]), str(r[3]), str(r[4]), str(r[5] or ""))
            for r in rows]


def sqlite_enrol(db: sqlite3.Connection, node: str, record: EpochRecord) -> bool:
    cur = db.execute("INSERT OR IGNORE INTO node_keys VALUES (?,?,?,?,?,?,?,?)",
                     (node, record.epoch, key_id_of(record.key), record.public_key,
                      orjson.dumps(dict(record.ends)).decode(), record.how, record.detail, time.time_ns()))
    if cur.rowcount == 1 and record.attestation:
        db.execute("INSERT OR IGNORE INTO enrollments VALUES (?,?)", (node, record.attestation))
    return cur.rowcount == 1


def sqlite_boot(db: sqlite3.Connection, node: str, counter: int) -> Boot | None:
    row = db.execute("SELECT boot_id FROM node_boots WHERE node=? AND boot_counter=?", (node, counter)).fetchone()
    return None if row is None else Boot(counter, bytes(row[0]))


def sqlite_statements(records: EpochRecords) -> list[Statement]:
    """The rows a batch brings, for the batch's own transaction."""
    now = time.time_ns()
    out: list[Statement] = [("INSERT OR IGNORE INTO node_boots VALUES (?,?,?,?)",
                             (records.node, b.counter, b.boot_id, now)) for b in records.boots]
    c = records.certified
    if c is not None:
        out.append(("INSERT OR IGNORE INTO node_keys VALUES (?,?,?,?,?,?,?,?)",
                    (records.node, c.epoch, key_id_of(c.key), c.public_key, orjson.dumps(dict(c.ends)).decode(),
                     c.how, c.detail, now)))
    return out


class EpochIndex:
    """The Ingestor's view of its nodes' epochs and boots. With `cache_chains` False (a store that other
    aggregators write too) each node's epochs are read from the store at every batch, so an epoch
    another aggregator certified retires the one before it here at once."""

    def __init__(self, store: EpochStore, *, cache_chains: bool = True,
                 attest: Callable[[str, bytes, str, str], str] | None = None) -> None:
        self.store = store
        self.attest = attest
        self.cache_chains = cache_chains
        self._chains: dict[str, EpochChain] = {}
        self._boots: dict[tuple[str, int], Boot] = {}
        self._stream_boots: dict[tuple[str, str], Boot | None] = {}

    def chain(self, node: str) -> EpochChain | None:
        """The node's certified epochs, or None before its enrolment."""
        cached = self._chains.get(node) if self.cache_chains else None
        if cached is not None:
            return cached
        chain = chain_of(self.store.epoch_records(node))
        if chain is not None:
            self._chains[node] = chain
        return chain

    def forget(self, node: str) -> None:
        """Read the node's epochs, boots and stream heads from the store again (another writer moved on)."""
        self._chains.pop(node, None)
        for counter in [k for k in self._boots if k[0] == node]:
            del self._boots[counter]
        for stream in [k for k in self._stream_boots if k[0] == node]:
            del self._stream_boots[stream]

    def current_epochs(self) -> dict[str, int]:
        """The current epoch of each node seen since start."""
        return {node: chain.current for node, chain in self._chains.items()}

    def enrol(self, node: str, key: Ed25519PublicKey, how: str, detail: str) -> EpochChain | None:
        """Record the node's epoch-0 key (a security record); None when another writer enrolled it first."""
        raw = raw_public(key)
        attestation = self.attest(node, raw, how, detail) if self.attest is not None else ""
        if not self.store.enrol(node, EpochRecord(0, raw, {}, how, detail, attestation)):
            self.forget(node)
            return None
        log.warning("node enrolled", extra={"node": node, "epoch": 0, "key_id": key_id_of(key), "how": how,
                                            "detail": detail, "attested": bool(attestation)})
        chain = EpochChain({0: key})
        self._chains[node] = chain
        return chain

    def boot(self, node: str, counter: int) -> Boot | None:
        """The boot the node had under `counter`, if any batch of it was stored."""
        key = (node, counter)
        cached = self._boots.get(key)
        if cached is None:
            cached = self.store.boot(node, counter)
            if cached is not None:
                self._boots[key] = cached
        return cached

    def stream_boot(self, node: str, stream: str, head: Callable[[], BatchHeader | None] | None = None
                    ) -> Boot | None:
        """The boot that sealed the stream's newest stored batch (read from the store once per start)."""
        key = (node, stream)
        if key not in self._stream_boots:
            header = head() if head is not None else self.store.head_header(node, stream)
            self._stream_boots[key] = None if header is None else Boot(header.boot_counter, header.boot_id)
        return self._stream_boots[key]

    def records(self, node: str, header: BatchHeader, cert: EpochCert | None) -> EpochRecords:
        """What the batch brings: its boot when new, the epoch it certifies."""
        boots = () if self.boot(node, header.boot_counter) is not None else (Boot(header.boot_counter,
                                                                                   header.boot_id),)
        where = f"{header.stream_id}#{header.seq}"
        return EpochRecords(node, boots, cert_record(cert, where) if cert is not None else None)

    def committed(self, node: str, header: BatchHeader, chain: EpochChain | None,
                  cert: EpochCert | None) -> None:
        """Update the caches after the batch and its records were committed."""
        boot = Boot(header.boot_counter, header.boot_id)
        if (node, header.boot_counter) not in self._boots:
            self._boots[(node, header.boot_counter)] = boot
            log.info("node boot seen", extra={"node": node, "boot_counter": header.boot_counter,
                                              "boot_id": header.boot_id.hex()})
        self._stream_boots[(node, header.stream_id)] = boot
        if chain is not None:
            self._chains[node] = chain
        if cert is not None:
            log.warning("node key epoch certified", extra={"node": node, "epoch": cert.epoch,
                                                           "key_id": key_id_of(cert.key), "ends": dict(cert.ends)})
