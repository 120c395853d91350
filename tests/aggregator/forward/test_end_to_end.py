"""A real agent ships a log file to a real aggregator process, which forwards every stored event to a
Splunk HEC receiver started here; across an aggregator restart nothing is lost or sent twice."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from agent.localrun import Workspace, wait_for
from tests.aggregator.forward.receivers import HttpReceiver
from tests.conftest import free_port

TOKEN = "e2e-hec-token"


def auth_lines(start: int, count: int) -> bytes:
    return b"".join(f"Nov 26 10:{n // 60 % 60:02d}:{n % 60:02d} web-1 sshd[{1000 + n}]: Accepted password for "
                    f"user{n} from 10.0.0.{n % 250 + 1} port {40000 + n} ssh2\n".encode()
                    for n in range(start, start + count))


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(rf'^{name}{{output="hec"}} (\S+)$', text, re.M)
    assert match, f"{name} not exported:\n{text[-1500:]}"
    return float(match.group(1))


def test_an_agent_to_aggregator_to_hec_run_forwards_every_event_once_across_a_restart(
        workspace: Workspace, tmp_path: Path) -> None:
    hec = HttpReceiver("hec", token=TOKEN)
    try:
        token = tmp_path / "hec.token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        metrics_port = free_port()
        extra = (f'[[forward]]\ntype = "splunk_hec"\nname = "hec"\nurl = "{hec.url()}"\ntoken_file = "{token}"\n'
                 f'linger_ms = 100\nbatch_size = 50\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
        workspace.enrol("web-1")
        aggregator = workspace.start_aggregator(extra=extra)
        log = tmp_path / "auth.log"
        log.write_bytes(auth_lines(0, 120))
        agent = workspace.start_agent(workspace.agent_config("web-1", [("syslog", str(log))]))
        wait_for(lambda: workspace.stored_events() >= 120, 60, "120 stored events")
        hec.wait_for_events(120)
        wait_for(lambda: metric(metrics_port, "logseal_aggregator_forwarded_events_total") == 120, 30,
                 "120 forwarded in the metrics")
        wait_for(lambda: metric(metrics_port, "logseal_aggregator_forward_lag_events") == 0, 30, "lag 0")
        assert metric(metrics_port, "logseal_aggregator_forward_dead_lettered_total") == 0

        port = workspace.port
        assert aggregator.stop() == 0
        with log.open("ab") as f:
            f.write(auth_lines(120, 80))
        workspace.start_aggregator(extra=extra, port=port)
        wait_for(lambda: workspace.stored_events() >= 200, 60, "200 stored events")
        ids = hec.wait_for_events(200)
        assert agent.stop() == 0
    finally:
        hec.stop()
    assert len(ids) == len(set(ids)) == 200
    users = [e["user"]["name"] for e in hec.events]
    assert sorted(users) == sorted(f"user{n}" for n in range(200))
    assert {e["event"]["dataset"] for e in hec.events} == {"system.auth"}
    assert {e["fields"]["event_id"] for e in hec.hec_envelopes} == set(ids)
    assert hec.problems == []
    assert TOKEN not in (workspace.root / "aggregator.log").read_text()
