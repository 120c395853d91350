"""The JetStream store against a real 3-node cluster: publish, dedup of resends, compare-and-set
between two aggregators, and recovery from a writer that stopped between publish and head update."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.ingest import Ingestor
from agent.aggregator.jetstream import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID, JetStreamStore, Names, connect
from agent.aggregator.jetstream_read import verify_jetstream
from agent.localnats import NatsCluster
from agent.seal import GENESIS, ChainHead, Sealer, keyring_from
from agent.wire import batch_to_bytes

STREAM = "TEST"


def _batches(node: str, count: int, key: Ed25519PrivateKey) -> list[bytes]:
    sealer = Sealer(node, key, zstd_level=1)
    head, out = GENESIS, []
    for i in range(count):
        event = {"@timestamp": f"2026-11-26T10:00:{i % 60:02d}.000000Z", "event": {"dataset": "system.auth",
                                                                           "action": "ssh_login"},
                 "message": f"{node} line {i}"}
        batch = sealer.seal("auth", head, [event])
        head = ChainHead(batch.header.seq, batch.batch_hash)
        out.append(batch_to_bytes(batch))
    return out


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def stores(nats_cluster: NatsCluster) -> Iterator[list[JetStreamStore]]:
    """Two stores on one stream: what two aggregators hold."""
    opened = [JetStreamStore(nats_cluster.urls, STREAM, replicas=3) for _ in range(2)]
    yield opened
    for store in opened:
        store.close()


def _ingestor(store: JetStreamStore, key: Ed25519PrivateKey) -> Ingestor:
    return Ingestor(store, keyring_from({"node-a": key.public_key()}))


def _stream_messages(url: str, subject: str) -> list[bytes]:
    async def read() -> list[bytes]:
        from agent.aggregator.jetstream import iter_messages

        nc = await connect([url])
        try:
            return [bytes(m.data) async for m in iter_messages(nc.jetstream(), STREAM, subject)]
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_batch_is_published_exactly_as_signed_and_the_head_and_tree_follow(
        stores: list[JetStreamStore], key: Ed25519PrivateKey, nats_cluster: NatsCluster) -> None:
    ingestor = _ingestor(stores[0], key)
    raws = _batches("node-a", 3, key)
    acks = [ingestor.handle(raw, "peer") for raw in raws]
    assert [a.status for a in acks] == [pb.Ack.STORED] * 3
    assert [a.leaf_index for a in acks] == [0, 1, 2]
    assert _stream_messages(nats_cluster.urls[1], Names(STREAM).batches) == raws
    other = stores[1]
    assert other.head("node-a", "auth").seq == 3
    tree = other.merkle_state()
    from agent.wire import batch_from_bytes

    assert tree.root() == merkle.root([merkle.leaf_hash(batch_from_bytes(r).batch_hash) for r in raws])


def test_a_resend_to_either_aggregator_is_a_duplicate_and_stored_once(
        stores: list[JetStreamStore], key: Ed25519PrivateKey, nats_cluster: NatsCluster) -> None:
    first, second = (_ingestor(s, key) for s in stores)
    raws = _batches("node-a", 4, key)
    for raw in raws[:2]:
        assert first.handle(raw, "peer").status == pb.Ack.STORED
    assert first.handle(raws[1], "peer").status == pb.Ack.DUPLICATE
    # The second aggregator read the head before the first stored more: its view is stale.
    assert second.handle(raws[0], "peer").status == pb.Ack.DUPLICATE
    assert first.handle(raws[2], "peer").status == pb.Ack.STORED
    assert second.handle(raws[2], "peer").status == pb.Ack.DUPLICATE  # dedup window + reconcile
    assert second.handle(raws[3], "peer").status == pb.Ack.STORED
    assert first.handle(raws[3], "peer").status == pb.Ack.DUPLICATE
    assert _stream_messages(nats_cluster.url.split(",")[2], Names(STREAM).batches) == raws
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert report.ok, report.problems
    assert report.batches == 4


def test_two_aggregators_racing_on_one_chain_store_each_batch_once_and_keep_one_tree(
        stores: list[JetStreamStore], key: Ed25519PrivateKey, nats_cluster: NatsCluster) -> None:
    ingestors = [_ingestor(s, key) for s in stores]
    raws = _batches("node-a", 30, key)
    statuses: list[list[int]] = [[], []]
    leaves: dict[int, int] = {}

    def send(which: int) -> None:
        for i, raw in enumerate(raws):  # both send every batch, as an agent failing over and back would
            ack = ingestors[which].handle(raw, f"peer{which}")
            statuses[which].append(ack.status)
            if ack.status == pb.Ack.STORED:
                leaves[i] = ack.leaf_index

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(30):  # per batch: stored by exactly one of them, a duplicate at the other
        assert sorted([statuses[0][i], statuses[1][i]]) == sorted([pb.Ack.STORED, pb.Ack.DUPLICATE]), i
    assert _stream_messages(nats_cluster.urls[0], Names(STREAM).batches) == raws
    assert leaves == {i: i for i in range(30)}  # one chain: stream order is seq order
    assert stores[0].merkle_state().size == 30
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert report.ok, report.problems


def test_a_writer_that_stopped_after_publishing_is_reconciled_from_the_stream(
        stores: list[JetStreamStore], key: Ed25519PrivateKey, nats_cluster: NatsCluster) -> None:
    ingestor = _ingestor(stores[0], key)
    raws = _batches("node-a", 3, key)
    assert ingestor.handle(raws[0], "peer").status == pb.Ack.STORED

    async def publish_without_head_update() -> None:  # an aggregator killed between the two steps
        nc = await connect(nats_cluster.urls)
        try:
            await nc.jetstream().publish(Names(STREAM).batch_subject("node-a", "auth"), raws[1], headers={
                MSG_ID: "node-a.auth.2", EXPECTED_LAST_SUBJECT_SEQ: "1"})
        finally:
            await nc.close()

    asyncio.run(publish_without_head_update())
    assert stores[1].head("node-a", "auth").seq == 1  # the bucket is one behind the stream
    takeover = _ingestor(stores[1], key)
    assert takeover.handle(raws[1], "peer").status == pb.Ack.DUPLICATE
    assert takeover.handle(raws[2], "peer").status == pb.Ack.STORED
    assert _stream_messages(nats_cluster.urls[0], Names(STREAM).batches) == raws
    assert stores[0].merkle_state().size == 3  # the orphan is a leaf, once, in stream order
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert report.ok, report.problems
    assert report.tree_size == 3
    assert not [line for line in report.info if "Merkle state covers" in line]


def test_a_second_batch_for_a_stored_seq_is_refused_as_forked_and_kept_as_evidence(
        stores: list[JetStreamStore], key: Ed25519PrivateKey, nats_cluster: NatsCluster) -> None:
    ingestor = _ingestor(stores[0], key)
    raws = _batches("node-a", 1, key)
    assert ingestor.handle(raws[0], "peer").status == pb.Ack.STORED
    sealer = Sealer("node-a", key, zstd_level=1)
    other = batch_to_bytes(sealer.seal("auth", GENESIS, [{"@timestamp": "2026-11-26T10:00:00.000000Z", "event": {},
                                                          "message": "something else"}]))
    ack = _ingestor(stores[1], key).handle(other, "peer")
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "FORKED")
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert [p.kind for p in report.problems] == ["equivocation"]


def test_a_store_with_no_reachable_server_is_a_clear_error(tmp_path: Path) -> None:
    from agent.errors import StoreError

    with pytest.raises(StoreError, match="cannot reach NATS at nats://127.0.0.1:1 within 2s"):
        JetStreamStore(["nats://127.0.0.1:1"], STREAM, connect_timeout_s=2)


def test_consistency_proofs_between_tree_sizes_verify(stores: list[JetStreamStore], key: Ed25519PrivateKey) -> None:
    ingestor = _ingestor(stores[0], key)
    raws = _batches("node-a", 7, key)
    for raw in raws:
        assert ingestor.handle(raw, "peer").status == pb.Ack.STORED
    from agent.wire import batch_from_bytes

    leaves = [merkle.leaf_hash(batch_from_bytes(r).batch_hash) for r in raws]
    tree = stores[1].merkle_state()  # what the other aggregator answers an agent's Consistency call with
    assert (tree.size, tree.root()) == (7, merkle.root(leaves))
    proof = stores[1].consistency_proof(3, 7)
    assert merkle.verify_consistency(3, 7, merkle.root(leaves[:3]), tree.root(), proof)
    with pytest.raises(ValueError, match="not within the log's 7 leaves"):
        stores[1].consistency_proof(3, 8)
