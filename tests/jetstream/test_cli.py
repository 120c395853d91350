"""`verify`, `query` and `bench` with `--jetstream`, as a user runs them, against a real cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.ingest import Ingestor
from agent.aggregator.jetstream import JetStreamStore, Names, connect
from agent.localnats import NatsCluster
from agent.seal import GENESIS, ChainHead, Sealer, keyring_from
from agent.wire import batch_to_bytes
from tests.conftest import run_cli

STREAM = "CLI"
USERS = ("alice", "bob")


def _seal(node: str, key: Ed25519PrivateKey, batches: int, per_batch: int) -> list[bytes]:
    sealer, head, out = Sealer(node, key, zstd_level=1), GENESIS, []
    for b in range(batches):
        events = [{"@timestamp": f"2026-11-26T10:{b:02d}:{i:02d}.000000Z",
                   "event": {"dataset": "system.auth", "action": "ssh_login" if i % 2 else "sudo"},
                   "user": {"name": USERS[i % 2]}, "message": f"{node} batch {b} event {i}"}
                  for i in range(per_batch)]
        batch = sealer.seal("auth", head, events)
        head = ChainHead(batch.header.seq, batch.batch_hash)
        out.append(batch_to_bytes(batch))
    return out


@pytest.fixture
def filled(nats_cluster: NatsCluster) -> Iterator[tuple[NatsCluster, dict[str, list[bytes]]]]:
    """Two nodes' batches stored through the Ingestor into stream CLI."""
    keys = {node: Ed25519PrivateKey.generate() for node in ("node-a", "node-b")}
    store = JetStreamStore(nats_cluster.urls, STREAM, replicas=3)
    try:
        ingestor = Ingestor(store, keyring_from({n: k.public_key() for n, k in keys.items()}))
        raws = {node: _seal(node, key, 3, 4) for node, key in keys.items()}
        for node in raws:
            for raw in raws[node]:
                assert ingestor.handle(raw, "peer").status == pb.Ack.STORED
    finally:
        store.close()
    yield nats_cluster, raws


def test_verify_passes_on_an_intact_stream_and_names_a_batch_stored_twice(
        filled: tuple[NatsCluster, dict[str, list[bytes]]]) -> None:
    cluster, raws = filled
    ok = run_cli("verify", "--jetstream", cluster.url, "--stream", STREAM)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "6 batches, 24 events" in ok.stdout and "intact" in ok.stdout

    async def store_again() -> None:  # someone with NATS access appends a copy past the dedup checks
        nc = await connect(cluster.urls)
        try:
            await nc.jetstream().publish(Names(STREAM).batch_subject("node-a", "auth"), raws["node-a"][1])
        finally:
            await nc.close()

    asyncio.run(store_again())
    bad = run_cli("verify", "--jetstream", cluster.url, "--stream", STREAM, "--json")
    assert bad.returncode == 1
    problems = orjson.loads(bad.stdout)["problems"]
    assert [(p["kind"], p["batch"]) for p in problems] == [("replayed", "node-a/auth#2")]


def test_query_reads_the_stream_with_the_same_filters_as_a_local_store(
        filled: tuple[NatsCluster, dict[str, list[bytes]]]) -> None:
    cluster, _ = filled
    out = run_cli("query", "--jetstream", cluster.urls[2], "--stream", STREAM, "--node", "node-b", "--user", "bob",
                  "--json")
    assert out.returncode == 0, out.stderr
    events = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [e["message"] for e in events] == [f"node-b batch {b} event {i}" for b in range(3) for i in (1, 3)]
    since = run_cli("query", "--jetstream", cluster.url, "--stream", STREAM, "--since", "2026-11-26T10:02:00Z",
                    "--action", "sudo", "--limit", "3", "--json")
    assert [orjson.loads(line)["message"] for line in since.stdout.splitlines()] == [
        "node-a batch 2 event 0", "node-b batch 2 event 0", "node-a batch 2 event 2"]


def test_misuse_and_an_unknown_stream_are_usage_errors(nats_cluster: NatsCluster) -> None:
    both = run_cli("verify", "/tmp/store", "--jetstream", nats_cluster.url, "--stream", STREAM)
    assert both.returncode == 2 and "either STORE or --jetstream" in both.stderr
    no_stream = run_cli("query", "--jetstream", nats_cluster.url)
    assert no_stream.returncode == 2 and "give --stream NAME" in no_stream.stderr
    unknown = run_cli("verify", "--jetstream", nats_cluster.url, "--stream", "NOPE")
    assert unknown.returncode == 2 and "no logseal stream 'NOPE'" in unknown.stderr


def test_bench_reports_throughput_through_one_and_two_aggregators(nats_cluster: NatsCluster) -> None:
    out = run_cli("bench", "--jetstream", nats_cluster.url, "--events", "2000", "--json", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout)
    assert figures["events"] == 2000
    assert figures["aggregators_1_events_per_s"] > 0 and figures["aggregators_2_events_per_s"] > 0

    async def streams() -> list[str]:
        nc = await connect(nats_cluster.urls)
        try:
            return [info.config.name for info in await nc.jetstream().streams_info()]
        finally:
            await nc.close()

    assert asyncio.run(streams()) == []  # the bench removed its streams and buckets


def test_bench_without_a_reachable_cluster_is_a_clear_error() -> None:
    out = run_cli("bench", "--jetstream", "nats://127.0.0.1:1", "--json")
    assert out.returncode == 2
    assert "cannot reach NATS at nats://127.0.0.1:1" in out.stderr
    assert out.stdout == ""


def test_an_aggregator_whose_cluster_cannot_be_reached_stops_at_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "trusted").mkdir()
    config = tmp_path / "aggregator.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path}/store"\n'
                      f'trusted_keys_dir = "{tmp_path}/trusted"\n'
                      '[store]\ntype = "jetstream"\nservers = ["nats://127.0.0.1:1"]\n')
    out = run_cli("aggregator", "--config", str(config), timeout=60)
    assert out.returncode == 2
    assert "cannot reach NATS at nats://127.0.0.1:1" in out.stderr
