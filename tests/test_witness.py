"""Every node a witness: the agent checks each checkpoint shown on an ack against the last one it saw,
and a rolled-back or forked store raises an alarm that is sealed into the stream `logseal-alarm`."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent.checkpoint import Checkpoint, Verdict, sign_checkpoint
from agent.localrun import Workspace, wait_for
from agent.witness import Alarm, Witness
from tests.conftest import run_cli
from tests.test_end_to_end import append, syslog_line

ORIGIN = "logseal/test"


def notes(key: Ed25519PrivateKey, leaves: list[bytes], sizes: list[int]) -> list[str]:
    return [sign_checkpoint(Checkpoint(ORIGIN, n, merkle.root(leaves[:n])), ORIGIN, key) for n in sizes]


def witness(tmp_path: Path, leaves: list[bytes], key: Ed25519PrivateKey | None) -> tuple[Witness, list[Alarm]]:
    alarms: list[Alarm] = []
    w = Witness(tmp_path, key.public_key() if key else None,
                lambda old, new: merkle.consistency_proof(leaves, old, new), alarms.append)
    return w, alarms


@pytest.fixture
def leaves() -> list[bytes]:
    return [merkle.leaf_hash(bytes([i]) * 32) for i in range(20)]


def test_a_growing_consistent_log_raises_no_alarm_and_is_remembered(tmp_path: Path, leaves: list[bytes]) -> None:
    key = Ed25519PrivateKey.generate()
    w, alarms = witness(tmp_path, leaves, key)
    for note in notes(key, leaves, [3, 7, 7, 20]):
        w.observe(note)
    assert alarms == [] and w.checked == 2  # 3 -> 7 and 7 -> 20; the repeated 7 needs no proof
    again, _ = witness(tmp_path, leaves, key)
    assert again.last_note == w.last_note  # kept across restarts


def test_a_smaller_checkpoint_is_a_rollback(tmp_path: Path, leaves: list[bytes]) -> None:
    key = Ed25519PrivateKey.generate()
    w, alarms = witness(tmp_path, leaves, key)
    for note in notes(key, leaves, [10, 4]):
        w.observe(note)
    assert [a.verdict for a in alarms] == [Verdict.ROLLBACK]


def test_a_fork_is_inconsistent(tmp_path: Path, leaves: list[bytes]) -> None:
    key = Ed25519PrivateKey.generate()
    forked = leaves[:5] + [merkle.leaf_hash(b"forged")] + leaves[6:]
    w, alarms = witness(tmp_path, leaves, key)
    w.observe(notes(key, leaves, [8])[0])
    w.observe(notes(key, forked, [12])[0])
    assert [a.verdict for a in alarms] == [Verdict.INCONSISTENT]


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path, leaves: list[bytes]) -> None:
    key = Ed25519PrivateKey.generate()
    w, alarms = witness(tmp_path, leaves, key)
    w.observe(notes(Ed25519PrivateKey.generate(), leaves, [5])[0])
    assert len(alarms) == 1 and w.last_note == ""


def test_an_agent_notices_its_aggregator_rolled_back(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=f'checkpoint_every = 2\norigin = "{ORIGIN}"\n')
    port = workspace.port
    config = workspace.agent_config("node-1", [("syslog", str(log))], extra=(
        "[batch]\nmax_events = 2\nlinger_ms = 10\n[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n"))
    config.write_text(f'aggregator_pub = "{workspace.store / "aggregator.pub"}"\n' + config.read_text())
    agent = workspace.start_agent(config)
    append(log, [syslog_line(i) for i in range(6)])
    wait_for(lambda: workspace.stored_events() >= 6, 60, "the first lines")
    assert aggregator.stop() == 0
    early = workspace.root / "store-early"
    shutil.copytree(workspace.store, early)  # what an insider will restore later
    aggregator = workspace.start_aggregator(extra=f'checkpoint_every = 2\norigin = "{ORIGIN}"\n', port=port)
    append(log, [syslog_line(i) for i in range(6, 20)])
    wait_for(lambda: workspace.stored_events() >= 20, 60, "the later lines")
    witness_file = workspace.root / "spool" / "node-1" / "witness.json"
    wait_for(lambda: witness_file.exists() and '"checkpoint"' in witness_file.read_text(), 30, "a witnessed checkpoint")
    assert aggregator.stop() == 0
    shutil.rmtree(workspace.store)
    shutil.copytree(early, workspace.store)  # the rollback
    aggregator = workspace.start_aggregator(extra=f'checkpoint_every = 2\norigin = "{ORIGIN}"\n', port=port)
    append(log, [syslog_line(i) for i in range(20, 22)])
    alarm = "ALARM: the aggregator showed a checkpoint that does not extend the last one this node saw"
    wait_for(lambda: bool(agent.logged(alarm)), 60, "the agent to raise the rollback alarm")
    assert [r["level"] for r in agent.logged(alarm, verdict="ROLLBACK")] == ["CRITICAL"]
    wait_for(lambda: "logseal.alarm" in run_cli("query", str(workspace.store), "--dataset", "logseal.alarm",
                                                 "--json").stdout, 60, "the sealed alarm event to be stored")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    alarm = orjson.loads(run_cli("query", str(workspace.store), "--dataset", "logseal.alarm", "--json")
                         .stdout.splitlines()[0])
    assert alarm["logseal"]["alarm"]["verdict"] == "ROLLBACK"
