"""Operating a running agent: SIGHUP reloads without losing position, `--status` tells what it does,
and /metrics, /healthz, /readyz answer over real HTTP."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import orjson

from agent.localrun import Workspace, wait_for
from tests.conftest import free_port, run_cli
from tests.test_end_to_end import append, assert_exactly_once, syslog_line, verify_ok


def test_sighup_adds_a_source_and_keeps_every_position(workspace: Workspace) -> None:
    auth, other = workspace.root / "auth.log", workspace.root / "other.log"
    append(auth, [syslog_line(i) for i in range(300)])
    append(other, [syslog_line(i) for i in range(1000, 1050)])
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    config = workspace.agent_config("node-1", [("syslog", str(auth))])
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 300, 60, "the first file to be stored")
    text = config.read_text() + f'[[source]]\ntype = "syslog"\nname = "other"\npaths = ["{other}"]\n'
    config.write_text(text)
    agent.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    append(auth, [syslog_line(i) for i in range(300, 400)])
    wait_for(lambda: workspace.stored_events() >= 450, 60, "both files to be stored after the reload")
    assert agent.logged("config reloaded", streams=["syslog", "other"])
    config.write_text(text + "colour = 3\n")
    agent.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: bool(agent.logged("config reload refused; the running config stays")), 30,
             "the bad config to be refused")
    append(auth, [syslog_line(i) for i in range(400, 410)])
    wait_for(lambda: workspace.stored_events() >= 460, 60, "the agent to go on with its running config")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    assert_exactly_once(workspace.store, [auth, other])
    verify_ok(workspace.store)


def test_status_and_metrics_of_a_running_agent(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    append(log, [syslog_line(i) for i in range(120)])
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    port = free_port()
    config = workspace.agent_config("node-1", [("syslog", str(log))], extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 120, 60, "the lines to be stored")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: b"logseal_agent_lines_read_total" in urllib.request.urlopen(base + "/metrics").read(), 30,
             "the metrics to be served")
    metrics = urllib.request.urlopen(base + "/metrics").read().decode()
    assert 'logseal_agent_lines_read_total{source="syslog"} 120' in metrics
    assert "logseal_agent_connected 1" in metrics
    assert urllib.request.urlopen(base + "/healthz").status == 200
    assert urllib.request.urlopen(base + "/readyz").status == 200
    wait_for(lambda: '"stored": ' in ((workspace.root / "spool" / "node-1" / "status.json").read_text()
                                       if (workspace.root / "spool" / "node-1" / "status.json").exists() else ""),
             30, "a status file")
    status = run_cli("agent", "--config", str(config), "--status")
    assert status.returncode == 0, status.stderr
    assert "connected" in status.stdout and str(log) in status.stdout
    as_json = orjson.loads(run_cli("agent", "--config", str(config), "--status", "--json").stdout)
    assert as_json["streams"][0]["lines"] == 120
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    final = orjson.loads((workspace.root / "spool" / "node-1" / "status.json").read_text())
    assert final["acks"]["stored"] >= 1 and final["spool"]["batches"] == 0


def test_status_before_the_agent_ever_ran_is_a_clear_error(workspace: Workspace, tmp_path: Path) -> None:
    workspace.enrol("node-1")
    config = workspace.agent_config("node-1", [("syslog", str(tmp_path / "x.log"))], port=1)
    result = run_cli("agent", "--config", str(config), "--status")
    assert result.returncode == 2 and "has not run" in result.stderr
