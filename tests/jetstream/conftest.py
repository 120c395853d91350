"""A real 3-node JetStream cluster on loopback for each test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.localnats import NatsCluster, nats_server_binary


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if nats_server_binary() is None:
        pytest.fail("nats-server is not installed: scripts/test.sh installs it (apt-get install nats-server)")
    cluster = NatsCluster(tmp_path / "nats", size=3).start(timeout_s=30)
    yield cluster
    cluster.stop()
