"""What the Ingestor needs of a store, so that the local store and the JetStream store both serve it.

A store that several aggregators share can learn, while storing, that another aggregator moved a
chain on (`ChainMoved`): the Ingestor then re-reads the head and verifies the batch again (it may
now be a duplicate, or out of order). `StoreUnavailable` is an OSError: the server does not ack the
batch and the agent sends it again later.

The key epoch checks read the node's epochs, boots and the stream head's header through the same
interface (`EpochStore`, aggregator/epochs.py), and `append` stores the boot and epoch a batch brings
together with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent.aggregator.epochs import EpochRecords, EpochStore
from agent.aggregator.index_rows import IndexRow
from agent.errors import StoreError
from agent.seal import ChainHead, SealedBatch


class ChainMoved(StoreError):
    """Another writer advanced this (node, stream) chain since it was read: verify again."""


class StoreUnavailable(OSError):
    """The store cannot take writes now (e.g. no NATS quorum); nothing was acked."""


class IngestStore(EpochStore, Protocol):
    def head(self, node: str, stream: str) -> ChainHead: ...

    def known_hash(self, node: str, stream: str, seq: int) -> bytes | None: ...

    def refresh(self, node: str, stream: str) -> bool:
        """Re-read the chain head from its source of truth; True if it changed."""
        ...

    def append(self, raw: bytes, batch: SealedBatch, rows: Sequence[IndexRow],
               epochs: EpochRecords | None = None) -> int:
        """Durably store one verified batch, with the boot and key epoch it brings; returns its Merkle
        leaf index + 1."""
        ...

    def record_equivocation(self, peer: str, raw: bytes, batch: SealedBatch, stored_hash: bytes) -> bool: ...

    def record_rejection(self, peer: str, node: str, stream: str, seq: int, verdict: str, reason: str) -> None: ...

    def remember_key(self, node: str, key_id: str, pem: bytes) -> None:
        """Keep a node's public key beside the batches it signs, for offline `verify`."""
        ...
