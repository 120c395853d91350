"""A real agent ships a log file to a real aggregator process, which forwards every stored event to a
Splunk HEC receiver started here; across an aggregator restart nothing is lost or sent twice."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
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


def test_a_siem_that_never_answers_neither_stalls_ingest_nor_shutdown(workspace: Workspace, tmp_path: Path) -> None:
    black_hole = socket.create_server(("127.0.0.1", 0))  # accepts connections, never reads nor answers
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(black_hole.accept()[0]), daemon=True)
    accepting.start()
    try:
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/hook"
        workspace.enrol("web-1")
        aggregator = workspace.start_aggregator(
            extra=f'[[forward]]\ntype = "webhook"\nname = "hole"\nurl = "{url}"\ntimeout_s = 600\n')
        log = tmp_path / "auth.log"
        log.write_bytes(auth_lines(0, 100))
        agent = workspace.start_agent(workspace.agent_config("web-1", [("syslog", str(log))]))
        wait_for(lambda: bool(held), 30, "the forwarder to connect to the black hole")
        with log.open("ab") as f:
            f.write(auth_lines(100, 50))
        wait_for(lambda: workspace.stored_events() >= 150, 60, "150 stored events while the SIEM hangs")
        assert agent.stop() == 0
        started = time.monotonic()
        assert aggregator.stop() == 0
        assert time.monotonic() - started < 20
    finally:
        black_hole.close()
        for conn in held:
            conn.close()
    cursor = json.loads((workspace.store / "forward" / "hole.cursor").read_text())
    assert (cursor["batch_id"], cursor["index"]) == (1, 0)  # nothing was accepted, so nothing is skipped
    log = (workspace.root / "aggregator.log").read_text()
    assert "breaking the request off" in log and '"output":"hole"' in log
