"""Per-node key epochs and boots, kept durably in the store's index (tables `node_keys`, `node_boots`).

`node_keys` has one row per (node, epoch): its public key, how it came (`pinned`: from
trusted_keys_dir; `tofu`: first key presented with a valid client certificate; `certified`: by the
node's certifying batch, named in `detail`) and, for a certified epoch, the stream ends of the epoch
before it. Rows of a certified epoch and of a new boot are written in the same SQLite transaction as
the batch that brings them (`Store.append(..., extra=...)`), so a crash cannot keep one without the
other. Enrolment happens once, before the node's first batch is stored, and is logged as a security
record.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

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


class EpochIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self._chains: dict[str, EpochChain] = {}
        self._boots: dict[tuple[str, int], Boot | None] = {}
        self._stream_boots: dict[tuple[str, str], Boot | None] = {}
        self._latest: dict[str, int] = {}

    def chain(self, node: str) -> EpochChain | None:
        """The node's certified epochs, or None before its enrolment."""
        cached = self._chains.get(node)
        if cached is not None:
            return cached
        rows = self.db.execute("SELECT epoch, public_key, ends FROM node_keys WHERE node=? ORDER BY epoch",
                               (node,)).fetchall()
        if not rows:
            return None
        chain = EpochChain({int(r[0]): Ed25519PublicKey.from_public_bytes(bytes(r[1])) for r in rows})
        for epoch, _, ends in rows:
            if int(epoch) > 0:
                chain.ends[int(epoch) - 1] = orjson.loads(ends)
        self._chains[node] = chain
        return chain

    def current_epochs(self) -> dict[str, int]:
        """The current epoch of each node seen since start."""
        return {node: chain.current for node, chain in self._chains.items()}

    def enrol(self, node: str, key: Ed25519PublicKey, how: str, detail: str) -> EpochChain:
        """Record the node's epoch-0 key (a security record)."""
        self.db.execute("INSERT INTO node_keys VALUES (?,?,?,?,?,?,?,?)",
                        (node, 0, key_id_of(key), raw_public(key), "{}", how, detail, time.time_ns()))
        log.warning("node enrolled", extra={"node": node, "epoch": 0, "key_id": key_id_of(key), "how": how,
                                            "detail": detail})
        chain = EpochChain({0: key})
        self._chains[node] = chain
        return chain

    def certify_statements(self, node: str, cert: EpochCert, where: str) -> list[Statement]:
        return [("INSERT OR IGNORE INTO node_keys VALUES (?,?,?,?,?,?,?,?)",
                 (node, cert.epoch, key_id_of(cert.key), raw_public(cert.key),
                  orjson.dumps(dict(cert.ends)).decode(), "certified", where, time.time_ns()))]

    def boot(self, node: str, counter: int) -> Boot | None:
        """The boot the node had under `counter`, if any batch of it was stored."""
        key = (node, counter)
        if key not in self._boots:
            row = self.db.execute("SELECT boot_id FROM node_boots WHERE node=? AND boot_counter=?", key).fetchone()
            self._boots[key] = None if row is None else Boot(counter, bytes(row[0]))
        return self._boots[key]

    def stream_boot(self, node: str, stream: str, head: Callable[[], BatchHeader | None]) -> Boot | None:
        """The boot that sealed the stream's newest stored batch (`head` reads it once per start)."""
        key = (node, stream)
        if key not in self._stream_boots:
            header = head()
            self._stream_boots[key] = None if header is None else Boot(header.boot_counter, header.boot_id)
        return self._stream_boots[key]

    def boot_statements(self, node: str, header: BatchHeader) -> list[Statement]:
        if self.boot(node, header.boot_counter) is not None:
            return []
        return [("INSERT OR IGNORE INTO node_boots VALUES (?,?,?,?)",
                 (node, header.boot_counter, header.boot_id, time.time_ns()))]

    def committed(self, node: str, header: BatchHeader, chain: EpochChain | None,
                  cert: EpochCert | None) -> None:
        """Update the caches after the batch and its statements were committed."""
        boot = Boot(header.boot_counter, header.boot_id)
        if self.boot(node, header.boot_counter) is None:
            self._boots[(node, header.boot_counter)] = boot
            log.info("node boot seen", extra={"node": node, "boot_counter": header.boot_counter,
                                              "boot_id": header.boot_id.hex()})
        self._stream_boots[(node, header.stream_id)] = boot
        if chain is not None:
            self._chains[node] = chain
        if cert is not None:
            log.warning("node key epoch certified", extra={"node": node, "epoch": cert.epoch,
                                                           "key_id": key_id_of(cert.key), "ends": dict(cert.ends)})
