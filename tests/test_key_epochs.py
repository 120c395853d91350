"""Forward-secure node keys with a real agent and aggregator: epochs advance, retired private keys are
gone from disk, the store verifies; a key stolen at the current epoch cannot sign for an earlier one
(rejected over real gRPC, recorded, alerted; caught by `logseal verify` when written into a store by
hand); a batch claiming an earlier boot is a replay."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import grpc

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.index_rows import index_rows
from agent.aggregator.store import Store, read_record
from agent.bundle import verify_bundle
from agent.keys import load_private_key, load_public_key
from agent.localrun import LocalProcess, Workspace, wait_for
from agent.seal import ChainHead, SealedBatch, Sealer, decode_events, open_payload
from agent.wire import INGEST_STREAM_METHOD, batch_from_bytes, batch_to_bytes
from tests.conftest import free_port, run_cli

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


def query(workspace: Workspace, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{workspace.store / 'index.db'}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def auth_events(workspace: Workspace) -> int:
    rows = query(workspace, "SELECT COUNT(*) FROM events WHERE dataset = 'system.auth'")
    return int(str(rows[0][0])) if rows else 0


def epoch_state(workspace: Workspace) -> tuple[int, Path]:
    """The node's current epoch and its private key file (what a thief would copy)."""
    keys_dir = workspace.root / "spool" / "node-1" / "node-keys"
    epoch = int(json.loads((keys_dir / "state.json").read_text())["epoch"])
    return epoch, keys_dir / f"epoch-{epoch}.key" if epoch else workspace.keys / "node-1.key"


def stored_batch(workspace: Workspace, stream: str, seq: int | None = None) -> SealedBatch:
    """A stored batch of node-1 (the stream's newest when `seq` is None), exactly as received."""
    sql = "SELECT segment, offset, length FROM batches WHERE node='node-1' AND stream=? "
    rows = query(workspace, sql + ("AND seq=?" if seq is not None else "ORDER BY seq DESC LIMIT 1"),
                 *([stream, seq] if seq is not None else [stream]))
    segment, offset, length = rows[0]
    return batch_from_bytes(read_record(workspace.store / "segments" / str(segment), int(str(offset)),
                                        int(str(length))))


def send(port: int, raw: bytes) -> list[pb.Ack]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = channel.stream_stream(INGEST_STREAM_METHOD, request_serializer=None,
                                       response_deserializer=pb.Ack.FromString)
        return list(stream(iter([raw]), timeout=20))


def start(workspace: Workspace, lines: int, epoch_batches: int = 3) -> tuple[LocalProcess, LocalProcess, Path]:
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * lines)
    workspace.enrol("node-1")
    alerts = workspace.root / "alerts.jsonl"
    aggregator = workspace.start_aggregator(extra=f'[detect]\nrules = ["builtin:logseal"]\nalerts_file = "{alerts}"\n')
    config = workspace.agent_config("node-1", [("syslog", str(log))], extra=(
        f"[batch]\nmax_events = 5\nlinger_ms = 20\n[keys]\nepoch_batches = {epoch_batches}\n"
        "[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n"))
    agent = workspace.start_agent(config)
    wait_for(lambda: auth_events(workspace) >= lines, 60, f"{lines} events stored")
    return aggregator, agent, log


def test_epochs_advance_retired_keys_are_erased_and_the_store_verifies(workspace: Workspace) -> None:
    aggregator, agent, _ = start(workspace, lines=60)
    wait_for(lambda: len(query(workspace, "SELECT epoch FROM node_keys WHERE node='node-1'")) >= 4, 30,
             "4 epochs of node-1 recorded")
    assert agent.stop() == 0
    epoch, current_key = epoch_state(workspace)
    status = json.loads((workspace.root / "spool" / "node-1" / "status.json").read_text())
    assert (status["key_epoch"], status["boot_counter"]) == (epoch, 1)
    recorded = query(workspace, "SELECT epoch, how FROM node_keys WHERE node='node-1' ORDER BY epoch")
    assert recorded[0] == (0, "pinned") and all(how == "certified" for _, how in recorded[1:])
    assert [e for e, _ in recorded] == list(range(len(recorded))) and recorded[-1][0] == epoch >= 3
    # Only the current epoch's private key is on disk: the enrolled key and every retired one are gone.
    keys_dir = current_key.parent
    assert sorted(p.name for p in keys_dir.glob("*.key")) == [current_key.name]
    assert not (workspace.keys / "node-1.key").exists()
    assert current_key.stat().st_mode & 0o077 == 0
    # Every certifying batch is in the store, in the logseal-keys stream, one per epoch change.
    assert query(workspace, "SELECT COUNT(*) FROM batches WHERE stream='logseal-keys'") == [(epoch,)]
    assert aggregator.stop() == 0
    result = run_cli("verify", str(workspace.store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout
    # An event signed at a later epoch is provable offline through the epoch chain from the enrolled key.
    last = stored_batch(workspace, "syslog")
    assert last.header.key_epoch >= 2
    out = workspace.root / "bundle.json"
    event_id = f"node-1:syslog:{last.header.seq}:0"
    proved = run_cli("prove", str(workspace.store), "--event-id", event_id, "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    aggregator_pub = workspace.store / "aggregator.pub"
    checked = run_cli("verify-bundle", str(out), "--aggregator-pub", str(aggregator_pub))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bundle = json.loads(out.read_text())
    assert len(bundle["key_epochs"]) == epoch
    enrolled = [load_public_key(workspace.trusted / "node-1.pub")]
    assert verify_bundle(bundle, load_public_key(aggregator_pub), trusted_node_keys=enrolled) == []
    bundle["key_epochs"] = bundle["key_epochs"][:1]  # a chain cut short does not reach the signing epoch
    (problem,) = verify_bundle(bundle, load_public_key(aggregator_pub), trusted_node_keys=enrolled)
    assert "KEY_EPOCH_PENDING" in problem
    # A restart goes on at the current epoch with the key left on disk.
    agent = workspace.start_agent(workspace.root / "node-1.toml")
    wait_for(lambda: bool(agent.logged("node key", boot_counter=2)), 30, "the agent to start again")
    assert agent.logged("node key", boot_counter=2, epoch=epoch)
    assert agent.stop() == 0


def test_a_stolen_current_key_cannot_sign_for_an_earlier_epoch(workspace: Workspace) -> None:
    aggregator, agent, _ = start(workspace, lines=40)
    wait_for(lambda: len(query(workspace, "SELECT epoch FROM node_keys WHERE node='node-1'")) >= 3, 30,
             "3 epochs of node-1 recorded")
    assert agent.stop() == 0
    epoch, key_path = epoch_state(workspace)
    stolen = load_private_key(key_path)
    last = stored_batch(workspace, "syslog")
    forger = Sealer("node-1", stolen, key_epoch=epoch - 1, boot_id=last.header.boot_id,
                    boot_counter=last.header.boot_counter)
    forged = forger.seal("syslog", ChainHead(last.header.seq, last.batch_hash),
                         [{"@timestamp": "2026-11-26T10:00:00.000000Z", "event": {"dataset": "system.auth"},
                           "message": "nothing happened here"}])
    raw = batch_to_bytes(forged)
    (ack,) = send(workspace.port, raw)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "KEY_EPOCH_MISUSE")
    assert f"key of epoch {epoch}" in ack.reason and f"claims epoch {epoch - 1}" in ack.reason
    assert query(workspace, "SELECT verdict, seq FROM rejections WHERE node='node-1'") == [
        ("KEY_EPOCH_MISUSE", forged.header.seq)]
    alerts = workspace.root / "alerts.jsonl"
    wait_for(lambda: alerts.exists() and "Key Epoch Misuse" in alerts.read_text(), 30, "the key epoch misuse alert")
    alert = next(json.loads(line) for line in alerts.read_text().splitlines() if "Key Epoch Misuse" in line)
    assert alert["rule"]["level"] == "critical"
    assert aggregator.stop() == 0
    # The same forgery written into the store by hand, past the aggregator, is found offline.
    store = Store(workspace.store)
    body = open_payload(forged).body
    assert body is not None
    store.append(raw, forged, index_rows(body))
    store.close()
    result = run_cli("verify", str(workspace.store))
    assert result.returncode == 1, result.stdout + result.stderr
    misuse = [line for line in result.stdout.splitlines() if line.startswith("key-epoch-misuse:")]
    assert len(misuse) == 1 and f"node-1/syslog#{forged.header.seq}" in misuse[0], result.stdout
    assert "1 problem(s) found" in result.stdout


def test_a_batch_claiming_an_earlier_boot_is_a_replay(workspace: Workspace) -> None:
    aggregator, agent, log = start(workspace, lines=10, epoch_batches=1000)
    assert agent.stop() == 0
    agent = workspace.start_agent(workspace.root / "node-1.toml")
    with log.open("ab") as f:
        f.write(LINE * 10)
    wait_for(lambda: auth_events(workspace) >= 20, 60, "the second boot's events stored")
    assert agent.stop() == 0
    assert query(workspace, "SELECT boot_counter FROM node_boots WHERE node='node-1' ORDER BY boot_counter") == [
        (1,), (2,)]
    first = stored_batch(workspace, "syslog", 1)
    assert first.header.boot_counter == 1
    (ack,) = send(workspace.port, batch_to_bytes(first))
    assert ack.status == pb.Ack.DUPLICATE  # a stored batch sent again is still just a duplicate
    # Boot 1's events sent again as a new batch, with a fresh boot id, signed with the current key.
    _, key_path = epoch_state(workspace)
    last = stored_batch(workspace, "syslog")
    body = open_payload(first).body
    assert body is not None
    events = decode_events(body)
    for event in events:
        event["event"].pop("id", None)
    head = ChainHead(last.header.seq, last.batch_hash)
    current = load_private_key(key_path)
    changed_id = Sealer("node-1", current, boot_id=os.urandom(16), boot_counter=1).seal("syslog", head, events)
    (ack,) = send(workspace.port, batch_to_bytes(changed_id))
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "REPLAYED")
    assert ack.reason.startswith(f"boot 1 was seen with boot id {first.header.boot_id.hex()}")
    # ... or with boot 1's own id: the stream already holds boot 2's batches.
    old_boot = Sealer("node-1", current, boot_id=first.header.boot_id, boot_counter=1).seal("syslog", head, events)
    (ack,) = send(workspace.port, batch_to_bytes(old_boot))
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "REPLAYED")
    assert "sealed in boot 1" in ack.reason and "later boot 2" in ack.reason
    assert aggregator.stop() == 0
    verdicts = query(workspace, "SELECT verdict FROM rejections WHERE node='node-1'")
    assert verdicts == [("REPLAYED",), ("REPLAYED",)]  # both recorded


def test_epochs_spooled_across_a_crash_and_a_restart_are_all_accepted_in_order(workspace: Workspace) -> None:
    """The aggregator is down while the node changes epochs, is killed and restarts: once the aggregator
    is up, the certifying batches go first and every batch of every epoch is stored and verifies."""
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 30)
    workspace.enrol("node-1")
    port = free_port()
    config = workspace.agent_config("node-1", [("syslog", str(log))], port=port, extra=(
        "[batch]\nmax_events = 3\nlinger_ms = 20\n[keys]\nepoch_batches = 2\n"
        "[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\nshutdown_grace_ms = 0\n"))
    agent = workspace.start_agent(config)
    keys_dir = workspace.root / "spool" / "node-1" / "node-keys"
    wait_for(lambda: (keys_dir / "state.json").exists() and epoch_state(workspace)[0] >= 4, 60,
             "the node to reach epoch 4 while the aggregator is down")
    agent.kill()
    agent = workspace.start_agent(config)
    with log.open("ab") as f:
        f.write(LINE * 30)
    wait_for(lambda: bool(agent.logged("node key", boot_counter=2)), 30, "the agent to start again")
    aggregator = workspace.start_aggregator(port=port)
    wait_for(lambda: auth_events(workspace) >= 60, 90, "both boots' events stored")
    assert agent.stop() == 0
    epoch, _ = epoch_state(workspace)
    assert query(workspace, "SELECT MAX(epoch) FROM node_keys WHERE node='node-1'") == [(epoch,)]
    assert query(workspace, "SELECT COUNT(*) FROM rejections") == [(0,)]
    assert aggregator.stop() == 0
    result = run_cli("verify", str(workspace.store))
    assert result.returncode == 0, result.stdout + result.stderr
