"""The test clusters survive a port race: a port picked free but taken before nats-server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import agent.localnats as localnats
from agent.localnats import NatsCluster, nats_server_binary


def test_a_start_whose_port_was_taken_is_retried_on_fresh_ports(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if nats_server_binary() is None:
        pytest.fail("nats-server is not installed: scripts/test.sh installs it (apt-get install nats-server)")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        picks = iter([taken])
        free = localnats._free_port
        monkeypatch.setattr(localnats, "_free_port", lambda: next(picks, None) or free())
        cluster = NatsCluster(tmp_path / "nats", size=3).start(timeout_s=20)
        try:
            assert all(n.healthy() for n in cluster.nodes)
            assert taken not in [n.client_port for n in cluster.nodes]
        finally:
            cluster.stop()
