"""Silence is visible: an idle stream seals empty heartbeat batches, and the aggregator raises an
alert for a node that stops sending them."""

from __future__ import annotations

import sqlite3

from agent.localrun import Workspace, wait_for


def heartbeats_stored(workspace: Workspace) -> int:
    index = workspace.store / "index.db"
    if not index.exists():
        return 0
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM batches WHERE event_count = 0").fetchone()[0])


def test_idle_streams_beat_and_a_silent_node_raises_an_alert(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    log.write_bytes(b"")
    workspace.enrol("node-1")
    alerts = workspace.root / "alerts.jsonl"
    aggregator = workspace.start_aggregator(extra=(
        f'node_silent_after_s = 3\n[detect]\nrules = ["builtin:logseal"]\nalerts_file = "{alerts}"\n'))
    config = workspace.agent_config("node-1", [("syslog", str(log))])
    config.write_text("heartbeat_s = 1\n" + config.read_text())
    agent = workspace.start_agent(config)
    wait_for(lambda: heartbeats_stored(workspace) >= 2, 30, "two heartbeat batches")
    silent = "node silent: no batch, not even a heartbeat"
    assert not aggregator.logged(silent)
    assert agent.stop() == 0
    wait_for(lambda: bool(aggregator.logged(silent, node="node-1")), 30, "the aggregator to notice the silence")
    wait_for(lambda: alerts.exists() and b"Node Silent" in alerts.read_bytes(), 30, "the node-silent alert")
    assert aggregator.stop() == 0
