"""Checkpoints of a JetStream store: one log, one signer, shared by the aggregators of a stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.ingest import Ingestor
from agent.aggregator.jetstream import JetStreamStore
from agent.aggregator.jetstream_checkpoints import JetStreamCheckpointer
from agent.aggregator.jetstream_read import verify_jetstream
from agent.checkpoint import open_checkpoint
from agent.config import AggregatorConfig, StoreConfig
from agent.errors import ConfigError
from agent.keys import load_or_create_key, load_private_key
from agent.localnats import NatsCluster
from agent.seal import GENESIS, ChainHead, Sealer, keyring_from
from agent.wire import batch_to_bytes

STREAM = "CP"


def _config(tmp_path: Path, name: str, cluster: NatsCluster, key: Path, origin: str = "") -> AggregatorConfig:
    return AggregatorConfig(listen="127.0.0.1:0", store_dir=tmp_path / name, trusted_keys_dir=tmp_path,
                            aggregator_key=key, origin=origin, checkpoint_every=3,
                            store=StoreConfig(type="jetstream", servers=cluster.urls, stream=STREAM))


@pytest.fixture
def stores(nats_cluster: NatsCluster) -> Iterator[list[JetStreamStore]]:
    opened = [JetStreamStore(nats_cluster.urls, STREAM, replicas=3) for _ in range(2)]
    yield opened
    for store in opened:
        store.close()


def test_aggregators_of_one_stream_sign_one_growing_log(tmp_path: Path, nats_cluster: NatsCluster,
                                                        stores: list[JetStreamStore]) -> None:
    log_key = tmp_path / "log.key"
    load_or_create_key(log_key)
    signers = [JetStreamCheckpointer.from_config(s, _config(tmp_path, f"agg{i}", nats_cluster, log_key),
                                                 time.time_ns()) for i, s in enumerate(stores)]
    node_key = Ed25519PrivateKey.generate()
    ingestors = [Ingestor(s, keyring_from({"n": node_key.public_key()}), checkpointer=c)
                 for s, c in zip(stores, signers, strict=True)]
    sealer, head = Sealer("n", node_key, zstd_level=1), GENESIS
    for i in range(7):  # alternate aggregators, as agents failing over do
        batch = sealer.seal("s", head, [{"@timestamp": "2026-11-26T10:00:00.000000Z", "event": {}}])
        head = ChainHead(batch.header.seq, batch.batch_hash)
        assert ingestors[i % 2].handle(batch_to_bytes(batch), "peer").status == pb.Ack.STORED
    signed = [s.last for s in signers]
    assert all(cp is not None for cp in signed)
    public = load_private_key(log_key).public_key()
    sizes = {open_checkpoint(cp.note, "logseal/CP", public).size for cp in signed if cp is not None}
    assert sizes == {6}  # both know the log's newest checkpoint (3, then 6), whoever signed it
    now = time.time_ns()
    won = signers[0].sign(now)
    assert won is not None and won.size == 7
    assert signers[1].sign(now) is None  # the same tree is not signed twice: it reads the winner's
    assert signers[1].last is not None and signers[1].last.note == won.note
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert report.ok, report.problems
    assert report.checkpoints >= 2


def test_an_aggregator_with_another_checkpoint_key_or_origin_is_refused(
        tmp_path: Path, nats_cluster: NatsCluster, stores: list[JetStreamStore]) -> None:
    first, other = tmp_path / "first.key", tmp_path / "other.key"
    load_or_create_key(first)
    load_or_create_key(other)
    JetStreamCheckpointer.from_config(stores[0], _config(tmp_path, "a", nats_cluster, first), time.time_ns())
    with pytest.raises(ConfigError, match="aggregator_key: the log of stream 'CP' is signed with another key"):
        JetStreamCheckpointer.from_config(stores[1], _config(tmp_path, "b", nats_cluster, other), time.time_ns())
    with pytest.raises(ConfigError, match="origin: the log of stream 'CP' is named 'logseal/CP'"):
        JetStreamCheckpointer.from_config(stores[1], _config(tmp_path, "b", nats_cluster, first, "elsewhere/log"),
                                          time.time_ns())
