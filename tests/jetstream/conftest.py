"""A real 3-node JetStream cluster on loopback for each test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.localnats import NatsCluster, nats_server_binary
from agent.localrun import LocalProcess, Workspace, logseal_command, wait_for


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if nats_server_binary() is None:
        pytest.fail("nats-server is not installed: scripts/test.sh installs it (apt-get install nats-server)")
    cluster = NatsCluster(tmp_path / "nats", size=3).start(timeout_s=30)
    yield cluster
    cluster.stop()


def start_jetstream_aggregator(ws: Workspace, name: str, cluster: NatsCluster, log_key: Path,
                               stream: str) -> tuple[LocalProcess, int]:
    """An aggregator process on the cluster's stream, with the shared log key; its port once it listens."""
    port_file = ws.root / f"{name}.port"
    servers = ", ".join(f'"{u}"' for u in cluster.urls)
    config = ws.root / f"{name}.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{ws.root / name}"\ntrusted_keys_dir = "{ws.trusted}"\n'
                      f'port_file = "{port_file}"\naggregator_key = "{log_key}"\ncheckpoint_interval_s = 1\n'
                      f'[store]\ntype = "jetstream"\nservers = [{servers}]\nstream = "{stream}"\nreplicas = 3\n')
    proc = LocalProcess(name, [*logseal_command(), "aggregator", "--config", str(config)], ws.root / f"{name}.log")
    proc.start()
    ws.processes.append(proc)
    wait_for(lambda: port_file.exists() or not proc.running(), 30, f"{name} to listen")
    assert proc.running(), proc.log_text()[-3000:]
    return proc, int(port_file.read_text())
