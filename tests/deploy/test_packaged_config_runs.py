"""The packaged agent config, pointed at a temporary tree, starts an agent whose /metrics and /readyz
answer over real HTTP (with mTLS material in place and no aggregator reachable yet)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from agent.keys import write_keypair
from agent.localrun import LocalProcess, logseal_command, wait_for
from tests.conftest import free_port
from tests.tls_material import make_tls_material

ROOT = Path(__file__).parents[2]



def test_packaged_agent_config_serves_metrics_and_readiness(tmp_path: Path) -> None:
    port = free_port()
    tls = make_tls_material(tmp_path / "etc" / "tls")
    write_keypair("worker-1", tmp_path / "var" / "lib" / "logseal" / "keys")
    (tmp_path / "var" / "log" / "audit").mkdir(parents=True)
    (tmp_path / "var" / "log" / "auth.log").write_bytes(
        b"Nov 26 10:00:00 worker-1 sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    text = (ROOT / "packaging" / "agent.toml").read_text()
    text = (text.replace("/var/lib/logseal", str(tmp_path / "var" / "lib" / "logseal"))
            .replace("/var/log", str(tmp_path / "var" / "log"))
            .replace("/etc/logseal/tls/ca.pem", str(tls["ca"]))
            .replace("/etc/logseal/tls/worker-1.pem", str(tls["client"]))
            .replace("/etc/logseal/tls/worker-1-key.pem", str(tls["client-key"]))
            .replace("0.0.0.0:9600", f"127.0.0.1:{port}")
            .replace("logseal-aggregator.example.net:7443", f"127.0.0.1:{free_port()}"))
    config = tmp_path / "agent.toml"
    config.write_text(text)
    agent = LocalProcess("agent", [*logseal_command(), "agent", "--config", str(config)], tmp_path / "agent.log")
    agent.start()
    try:
        base = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return urllib.request.urlopen(base + "/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(lambda: serving() or not agent.running(), 30, "the metrics endpoint")
        assert agent.running(), agent.log_text()
        assert urllib.request.urlopen(base + "/readyz").status == 200  # spool not full: ready
        metrics = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "logseal_agent_connected 0" in metrics
        assert 'logseal_build_info{component="agent"' in metrics or "logseal_build_info{" in metrics
        wait_for(lambda: 'logseal_agent_lines_read_total{source="syslog"} 1' in
                 urllib.request.urlopen(base + "/metrics").read().decode(), 30, "the auth.log line to be read")
    finally:
        assert agent.stop() == 0, agent.log_text()
