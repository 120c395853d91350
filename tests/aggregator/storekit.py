"""A store filled through the real ingest path, with a checkpointing aggregator key, for the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.checkpoints import Checkpointer
from agent.aggregator.ingest import Ingestor
from agent.aggregator.store import RECORD_OVERHEAD, Store
from agent.keys import public_pem
from agent.seal import GENESIS, ChainHead, SealedBatch, Sealer, keyring_from
from agent.wire import batch_to_bytes

ORIGIN = "test.example/logseal"


def events(b: int, n: int) -> list[dict[str, object]]:
    return [{"@timestamp": f"2026-11-26T10:00:{b % 60:02d}.{i:06d}Z",
             "event": {"dataset": "system.auth", "action": "ssh_login"}, "user": {"name": f"u{i}"}}
            for i in range(n)]


@dataclass
class Kit:
    """One store, its ingestor and checkpointer, and sealers for the nodes that send to it."""

    directory: Path
    witness: Path | None = None
    every: int = 1000
    segment_max_bytes: int = 64 << 20
    aggregator_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    node_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    heads: dict[tuple[str, str], ChainHead] = field(default_factory=dict)
    sent: list[SealedBatch] = field(default_factory=list)
    now_ns: int = 1_800_000_000_000_000_000

    def __post_init__(self) -> None:
        self.store = Store(self.directory, self.segment_max_bytes)
        (self.directory / "aggregator.pub").write_bytes(public_pem(self.aggregator_key.public_key()))
        self.checkpointer = Checkpointer(self.store, self.aggregator_key, ORIGIN, every=self.every,
                                         witness_dir=self.witness, now_ns=self.now_ns)
        self.ingestor = Ingestor(self.store, keyring_from({}), checkpointer=self.checkpointer)

    def node(self, node_id: str) -> Ed25519PrivateKey:
        if node_id not in self.node_keys:
            self.node_keys[node_id] = Ed25519PrivateKey.generate()
            self.ingestor.keyring = keyring_from({n: k.public_key() for n, k in self.node_keys.items()})
        return self.node_keys[node_id]

    def seal(self, node_id: str = "node-1", stream: str = "auth", per_batch: int = 3) -> SealedBatch:
        head = self.heads.get((node_id, stream), GENESIS)
        sealed = Sealer(node_id, self.node(node_id)).seal(stream, head, events(head.seq, per_batch))
        self.heads[(node_id, stream)] = ChainHead(sealed.header.seq, sealed.batch_hash)
        return sealed

    def send(self, batch: SealedBatch | bytes, peer: str = "test", cert_node: str | None = None) -> pb.Ack:
        raw = batch if isinstance(batch, bytes) else batch_to_bytes(batch)
        return self.ingestor.handle(raw, peer, cert_node)

    def add(self, count: int, node_id: str = "node-1", stream: str = "auth", per_batch: int = 3) -> None:
        for _ in range(count):
            sealed = self.seal(node_id, stream, per_batch)
            ack = self.send(sealed)
            assert ack.status == pb.Ack.STORED, ack
            self.sent.append(sealed)

    def checkpoint(self) -> None:
        self.now_ns += 1_000_000_000
        self.checkpointer.sign(self.now_ns)

    def close(self) -> None:
        self.store.close()

    def records(self) -> list[tuple[str, int, int]]:
        """(segment, offset, whole record length) of each stored batch, in ingest order."""
        rows = self.store.db.execute("SELECT segment, offset, length FROM batches ORDER BY id").fetchall()
        return [(str(s), int(o), int(n) + RECORD_OVERHEAD) for s, o, n in rows]
