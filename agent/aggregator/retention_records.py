"""Signed retention records: what a deletion took (segment, batches, Merkle leaves) and by which rule.

A record is a C2SP signed note (see agent/checkpoint.py) by the aggregator key under the log's
origin. Its text is built from the row's own columns, so changing any of them (the range, the
rule, the leaves' root) breaks the signature; the `signature` column holds the note's signature
line. `leaves_root` is the RFC 6962 root over the deleted batches' leaf hashes, so the leaf hashes
the index keeps for them (to recompute the tree) are themselves covered by the signature.

Invariants:
- `open_record(r, origin, key)` returns only if `r.signature` is a valid signature by (origin, key)
  over `record_text(r, origin)`.
- Leaves are `first_batch_id - 1 .. last_batch_id - 1` (leaf index = ingest number - 1).

No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent import merkle
from agent.checkpoint import open_note, sign_note

RECORD_HEADER = "logseal retention record v1"

RETENTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS retention (  -- one signed record per segment deleted by retention
    id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, rule TEXT NOT NULL, segment TEXT NOT NULL UNIQUE,
    first_batch_id INTEGER NOT NULL, last_batch_id INTEGER NOT NULL,
    first_leaf INTEGER NOT NULL, last_leaf INTEGER NOT NULL,
    bytes INTEGER NOT NULL, note TEXT NOT NULL, signature TEXT NOT NULL,
    events INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, leaves_root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS legal_holds (  -- holds keep matching events from retention; never deleted
    id INTEGER PRIMARY KEY, created_ns INTEGER NOT NULL, released_ns INTEGER, reason TEXT NOT NULL,
    node TEXT, dataset TEXT, user TEXT, action TEXT, since_ns INTEGER, until_ns INTEGER,
    release_reason TEXT
);
"""

RECORD_COLUMNS = ("id, time_ns, rule, segment, first_batch_id, last_batch_id, first_leaf, last_leaf, bytes, note, "
                  "signature, events, first_ns, last_ns, leaves_root")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """`text` with control characters (newlines too) replaced, as a note line must be."""
    return _CONTROL.sub(" ", text)


@dataclass(frozen=True, slots=True)
class RetentionRecord:
    id: int
    time_ns: int
    rule: str
    segment: str
    first_batch_id: int
    last_batch_id: int
    first_leaf: int
    last_leaf: int
    bytes: int
    note: str
    signature: str
    events: int
    first_ns: int
    last_ns: int
    leaves_root: str
    """Hex RFC 6962 root over the leaf hashes of leaves first_leaf..last_leaf."""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RetentionRecord:
        """A record from a `SELECT {RECORD_COLUMNS}` row."""
        (rid, time_ns, rule, segment, first_batch, last_batch, first_leaf, last_leaf, size, note, signature, events,
         first_ns, last_ns, root) = row
        return cls(int(rid), int(time_ns), str(rule), str(segment), int(first_batch), int(last_batch),
                   int(first_leaf), int(last_leaf), int(size), str(note), str(signature), int(events), int(first_ns),
                   int(last_ns), str(root))

    def as_row(self) -> tuple[object, ...]:
        return (self.id, self.time_ns, self.rule, self.segment, self.first_batch_id, self.last_batch_id,
                self.first_leaf, self.last_leaf, self.bytes, self.note, self.signature, self.events, self.first_ns,
                self.last_ns, self.leaves_root)


def leaves_root(leaf_hashes: Sequence[bytes]) -> str:
    return merkle.root(list(leaf_hashes)).hex()


def record_text(r: RetentionRecord, origin: str) -> str:
    """The signed text: every column but the signature, one per line."""
    lines = [RECORD_HEADER, f"origin {origin}", f"id {r.id}", f"time {r.time_ns}", f"rule {one_line(r.rule)}",
             f"segment {one_line(r.segment)}", f"batches {r.first_batch_id} {r.last_batch_id}",
             f"leaves {r.first_leaf} {r.last_leaf}", f"leaves-root {r.leaves_root}", f"bytes {r.bytes}",
             f"events {r.events}", f"event-time {r.first_ns} {r.last_ns}", f"note {one_line(r.note)}"]
    return "".join(line + "\n" for line in lines)


def sign_record(r: RetentionRecord, origin: str, key: Ed25519PrivateKey) -> str:
    """The signature line (without its newline) to keep in the `signature` column."""
    note = sign_note(record_text(r, origin), origin, key)
    return note.rstrip("\n").rpartition("\n")[2]


def open_record(r: RetentionRecord, origin: str, public_key: Ed25519PublicKey) -> None:
    """Raise CheckpointError unless the record's signature is valid over its own columns."""
    open_note(f"{record_text(r, origin)}\n{r.signature}\n", origin, public_key)
