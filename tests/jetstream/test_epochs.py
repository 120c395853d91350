"""Key epochs and boots through a JetStream store: the epochs and boots live in the stream's bucket,
so what one aggregator certified or saw binds every other aggregator of the stream at once.

Two `JetStreamStore`s on one stream stand for two aggregators; the agent's real `EpochKeeper` makes the
epoch keys and certifying batches. Then real processes: an agent changing its key every 3 batches
ships through two JetStream aggregators, one of which is killed, and `verify --jetstream` passes."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.ingest import Ingestor
from agent.aggregator.jetstream import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID, JetStreamStore, Names, connect
from agent.aggregator.jetstream_read import query_jetstream, verify_jetstream
from agent.aggregator.query import EventFilter
from agent.epochs import EpochKeeper
from agent.errors import StoreError
from agent.keychain import KEYS_STREAM
from agent.keys import load_or_create_key, load_public_key, write_keypair
from agent.localnats import NatsCluster
from agent.localrun import Workspace, wait_for
from agent.seal import GENESIS, ChainHead, SealedBatch, Sealer, keyring_from
from agent.wire import batch_to_bytes
from tests.conftest import run_cli
from tests.jetstream.conftest import start_jetstream_aggregator

STREAM = "EPOCHS"
NOW = "2026-11-26T10:00:00.000000Z"


class Node:
    """A node sealing `auth` batches with its real epoch keeper (a new epoch every 2 batches)."""

    def __init__(self, root: Path) -> None:
        key, self.public = write_keypair("node-1", root / "keys")
        self.keeper = EpochKeeper(root / "spool", key, epoch_s=86_400, epoch_batches=2)
        self.sealer = self.keeper.sealer("node-1", 3)
        self.heads: dict[str, ChainHead] = {}
        self.stolen: dict[int, Ed25519PrivateKey] = {}  # each epoch's key, as a thief copied it while current

    def next_batches(self) -> list[SealedBatch]:
        """One auth batch, and the certifying batch when the epoch changes after it."""
        self.stolen[self.keeper.epoch] = self.keeper.key
        batch = self.sealer.seal("auth", self.heads.get("auth", GENESIS),
                                 [{"@timestamp": NOW, "event": {"dataset": "system.auth"}, "message": "ok"}])
        self.heads["auth"] = ChainHead(batch.header.seq, batch.batch_hash)
        out = [batch]
        self.keeper.after_seal(self.sealer, self.heads, out.append, NOW)
        return out


@pytest.fixture
def two_aggregators(nats_cluster: NatsCluster) -> Iterator[tuple[JetStreamStore, JetStreamStore]]:
    a = JetStreamStore(nats_cluster.urls, STREAM, replicas=3)
    b = JetStreamStore(nats_cluster.urls[1:], STREAM, replicas=3)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_an_epoch_certified_through_one_aggregator_retires_the_old_key_at_the_other(
        tmp_path: Path, nats_cluster: NatsCluster, two_aggregators: tuple[JetStreamStore, JetStreamStore]) -> None:
    store_a, store_b = two_aggregators
    node = Node(tmp_path)
    keyring = keyring_from({"node-1": load_public_key(node.public)})
    agg_a, agg_b = Ingestor(store_a, keyring), Ingestor(store_b, keyring)

    for _ in range(3):  # epoch 0, its certifying batch and epoch 1 through B: B has seen epoch 1
        for batch in node.next_batches():
            assert agg_b.handle(batch_to_bytes(batch), "b").status == pb.Ack.STORED
    auth, certifying = node.next_batches()  # epoch 1's last batch, and the certifying batch of epoch 2
    assert agg_b.handle(batch_to_bytes(auth), "b").status == pb.Ack.STORED  # B holds the auth chain's head
    assert agg_a.handle(batch_to_bytes(certifying), "a").status == pb.Ack.STORED  # only A saw epoch 2 come
    assert node.keeper.epoch == 2
    assert [r.epoch for r in store_b.epoch_records("node-1")] == [0, 1, 2]

    # Whoever copied epoch 1's key signs the next auth batch as epoch 1 and sends it to B.
    thief = Sealer("node-1", node.stolen[1], 3, key_epoch=1,
                   boot_id=node.keeper.boot_id, boot_counter=node.keeper.boot_counter)
    forged = thief.seal("auth", node.heads["auth"], [{"@timestamp": NOW, "event": {}, "message": "forged"}])
    ack = agg_b.handle(batch_to_bytes(forged), "thief")
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "KEY_EPOCH_MISUSE"), ack.reason

    # A batch of a stream B never saw, naming the node's current boot counter under another boot id.
    replay = Sealer("node-1", node.keeper.key, 3, key_epoch=node.keeper.epoch, boot_id=os.urandom(16),
                    boot_counter=node.keeper.boot_counter).seal("other", GENESIS, [{"@timestamp": NOW, "event": {}}])
    ack = agg_b.handle(batch_to_bytes(replay), "thief")
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "REPLAYED"), ack.reason

    for batch in node.next_batches():  # the honest node goes on through B, in epoch 2
        assert agg_b.handle(batch_to_bytes(batch), "b").status == pb.Ack.STORED
    result = run_cli("verify", "--jetstream", nats_cluster.url, "--stream", STREAM, "--json")
    report = orjson.loads(result.stdout)
    assert result.returncode == 0, report["problems"]
    assert report["batches"] == 5 + 2  # 5 auth batches and 2 certifying batches


def test_a_certifying_batch_published_by_a_writer_that_stopped_is_taken_as_its_epoch_at_the_resend(
        tmp_path: Path, nats_cluster: NatsCluster, two_aggregators: tuple[JetStreamStore, JetStreamStore]) -> None:
    store_a, store_b = two_aggregators
    node = Node(tmp_path)
    keyring = keyring_from({"node-1": load_public_key(node.public)})
    agg_a, agg_b = Ingestor(store_a, keyring), Ingestor(store_b, keyring)
    (first,) = node.next_batches()
    second, certifying = node.next_batches()
    for batch in (first, second):
        assert agg_a.handle(batch_to_bytes(batch), "a").status == pb.Ack.STORED

    async def publish_only() -> None:  # A killed after publishing the certifying batch, before the bucket
        nc = await connect(nats_cluster.urls)
        try:
            await nc.jetstream().publish(Names(STREAM).batch_subject("node-1", KEYS_STREAM),
                                         batch_to_bytes(certifying),
                                         headers={MSG_ID: f"node-1.{KEYS_STREAM}.1", EXPECTED_LAST_SUBJECT_SEQ: "0"})
        finally:
            await nc.close()

    asyncio.run(publish_only())
    assert [r.epoch for r in store_b.epoch_records("node-1")] == [0]
    (third,) = node.next_batches()  # epoch 1's first batch
    ack = agg_b.handle(batch_to_bytes(third), "b")
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "KEY_EPOCH_PENDING")
    assert agg_b.handle(batch_to_bytes(certifying), "b").status == pb.Ack.DUPLICATE  # the agent's resend
    assert [r.epoch for r in store_b.epoch_records("node-1")] == [0, 1]
    assert agg_b.handle(batch_to_bytes(third), "b").status == pb.Ack.STORED
    report = verify_jetstream(nats_cluster.url, STREAM)
    assert report.ok, report.problems
    assert report.batches == 4


# Real processes.

NODE = "node-e"
LINES = 300


def _stored(url: str) -> list[str]:
    """The app's lines stored so far (not the certifying batches' events)."""
    try:
        messages = [str(e.get("message")) for e in query_jetstream(url, STREAM, EventFilter())]
    except StoreError:
        return []
    return [m for m in messages if m.startswith("line ")]


def test_an_agent_changing_its_key_every_3_batches_ships_through_two_jetstream_aggregators(
        tmp_path: Path, nats_cluster: NatsCluster) -> None:
    ws = Workspace(tmp_path / "ws")
    try:
        ws.enrol(NODE)
        log_key, _ = tmp_path / "log.key", load_or_create_key(tmp_path / "log.key")
        agg1, port1 = start_jetstream_aggregator(ws, "agg1", nats_cluster, log_key, STREAM)
        _, port2 = start_jetstream_aggregator(ws, "agg2", nats_cluster, log_key, STREAM)
        log = ws.root / "app.log"
        log.touch()
        config = ws.root / f"{NODE}.toml"
        config.write_text(f'node_id = "{NODE}"\nkey = "{ws.keys / (NODE + ".key")}"\n'
                          f'spool_dir = "{ws.root / "spool"}"\n'
                          f'aggregator = ["127.0.0.1:{port1}", "127.0.0.1:{port2}"]\n'
                          f'[[source]]\ntype = "syslog"\npaths = ["{log}"]\n'
                          '[batch]\nmax_events = 10\nlinger_ms = 20\n[keys]\nepoch_batches = 3\n'
                          '[ship]\nbackoff_initial_ms = 50\nbackoff_max_ms = 300\n')
        ws.start_agent(config)
        paced = threading.Event()

        def write(lines: range) -> None:
            with log.open("a") as f:
                for i in lines:
                    f.write(f"Nov 26 10:{i // 60 % 60:02d}:{i % 60:02d} {NODE} app[7]: line {i}\n")
                    f.flush()
                    if i % 10 == 9:
                        paced.wait(0.03)  # several batches, so several epochs (pacing, not synchronisation)

        write(range(LINES // 2))
        url = nats_cluster.url
        wait_for(lambda: len(_stored(url)) >= LINES // 2, 60, f"{LINES // 2} lines stored (logs in {ws.root})")
        assert agg1.kill() == -9  # the agent goes on through agg2, which sees epochs agg1 certified
        write(range(LINES // 2, LINES))
        wait_for(lambda: len(_stored(url)) >= LINES, 60, f"all {LINES} lines stored (logs in {ws.root})",
                 interval_s=0.3)

        stored = _stored(url)
        assert not [m for m, n in collections.Counter(stored).items() if n > 1]
        assert sorted(stored) == sorted(f"line {i}" for i in range(LINES))
        state = json.loads((ws.root / "spool" / "node-keys" / "state.json").read_text())
        store = JetStreamStore(nats_cluster.urls, STREAM)
        try:
            epochs = [r.epoch for r in store.epoch_records(NODE)]
        finally:
            store.close()
        assert epochs == list(range(state["epoch"] + 1)) and len(epochs) >= 5  # several epoch changes
        certifying = query_jetstream(url, STREAM, EventFilter(dataset="logseal.keys"))
        assert [e["logseal"]["key_epoch"]["epoch"] for e in certifying] == epochs[1:]

        result = run_cli("verify", "--jetstream", url, "--stream", STREAM, "--json")
        assert result.stdout, result.stderr[-3000:]
        report = orjson.loads(result.stdout)
        assert result.returncode == 0, report["problems"]
        assert report["events"] == LINES + len(certifying)
    finally:
        ws.stop_all()
