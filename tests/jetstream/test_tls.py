"""The aggregator, `verify --jetstream` and `query --jetstream` reach a NATS cluster that requires TLS
and client certificates; without the cluster's CA they are refused with a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent.aggregator.jetstream import Names, connect
from agent.aggregator.nats_tls import NatsTls
from agent.localnats import NatsCluster, nats_server_binary
from agent.localrun import Workspace, wait_for
from tests.conftest import run_cli
from tests.tls_material import make_tls_material

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[NatsCluster, dict[str, Path]]]:
    if nats_server_binary() is None:
        pytest.fail("nats-server is not installed: scripts/test.sh installs it (apt-get install nats-server)")
    tls = make_tls_material(tmp_path / "nats-tls")
    cluster = NatsCluster(tmp_path / "nats", size=3, tls=(tls["server"], tls["server-key"], tls["ca"]))
    cluster.start(timeout_s=30)
    yield cluster, tls
    cluster.stop()


def test_a_store_behind_nats_tls_is_written_verified_and_queried(
        tls_cluster: tuple[NatsCluster, dict[str, Path]], workspace: Workspace) -> None:
    cluster, tls = tls_cluster
    servers = ", ".join(f'"{u}"' for u in cluster.urls)
    store = (f'[store]\ntype = "jetstream"\nservers = [{servers}]\nstream = "TLS"\nreplicas = 3\n'
             f'tls_ca = "{tls["ca"]}"\ntls_cert = "{tls["client"]}"\ntls_key = "{tls["client-key"]}"\n')
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 20)
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=store)
    agent = workspace.start_agent(workspace.agent_config("node-1", [("syslog", str(log))]))
    nats_tls = ["--nats-ca", str(tls["ca"]), "--nats-cert", str(tls["client"]), "--nats-key", str(tls["client-key"])]

    def stored() -> int:
        result = run_cli("query", "--jetstream", cluster.url, "--stream", "TLS", "--json", *nats_tls)
        return len(result.stdout.splitlines()) if result.returncode == 0 else -1

    wait_for(lambda: stored() == 20, 60, "20 events readable over TLS")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    verified = run_cli("verify", "--jetstream", cluster.url, "--stream", "TLS", "--json", *nats_tls)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert orjson.loads(verified.stdout)["events"] == 20
    # Without the client certificate the servers refuse; without the CA the client refuses them.
    for missing in (nats_tls[:2], []):
        refused = run_cli("verify", "--jetstream", cluster.url, "--stream", "TLS", *missing, timeout=60)
        assert refused.returncode == 2 and "cannot reach NATS" in refused.stderr, refused.stderr
    half = run_cli("verify", "--jetstream", cluster.url, "--stream", "TLS", "--nats-cert", str(tls["client"]))
    assert half.returncode == 2 and "CA" in half.stderr and len(half.stderr.strip().splitlines()) == 1
    # The enrolment the aggregator signed, changed in the bucket by someone with NATS access, is caught.
    asyncio.run(rewrite_enrollment(cluster, tls))
    tampered = run_cli("verify", "--jetstream", cluster.url, "--stream", "TLS", "--json", *nats_tls)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert [p["kind"] for p in orjson.loads(tampered.stdout)["problems"]] == ["bad-enrollment-record"]


async def rewrite_enrollment(cluster: NatsCluster, tls: dict[str, Path]) -> None:
    nc = await connect(cluster.urls, tls=NatsTls(tls["ca"], tls["client"], tls["client-key"]))
    try:
        kv = await nc.jetstream().key_value(Names("TLS").bucket)
        key = Names.epochs_key("node-1")
        doc = orjson.loads((await kv.get(key)).value)
        assert doc["0"]["attestation"], "the aggregator signed the enrolment"
        doc["0"]["how"] = "tofu"
        await kv.put(key, orjson.dumps(doc))
    finally:
        await nc.close()
