"""The aggregator as a running process: hostile clients, health, metrics, key reload, live detection."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.localrun import Workspace, wait_for
from agent.wire import INGEST_STREAM_METHOD
from tests.conftest import free_port

FALCO = Path(__file__).parents[1] / "data" / "falco"



def raw_stream(port: int) -> tuple[grpc.Channel, grpc.StreamStreamMultiCallable]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 200 << 20)])
    return channel, channel.stream_stream(INGEST_STREAM_METHOD, request_serializer=None,
                                          response_deserializer=pb.Ack.FromString)


def test_garbage_oversized_and_silent_clients_do_not_stop_the_others(workspace: Workspace) -> None:
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra="[limits]\nmax_message_bytes = 1048576\nstream_idle_timeout_s = 1\n")
    channel, stream = raw_stream(workspace.port)
    acks = list(stream(iter([b"\x00\xffnot a batch", b""]), timeout=30))
    assert [a.status for a in acks] == [pb.Ack.REJECTED, pb.Ack.REJECTED]
    assert acks[0].verdict == "MALFORMED"
    with pytest.raises(grpc.RpcError) as too_big:
        list(stream(iter([b"\x0a" * (2 << 20)]), timeout=30))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def never_sends():  # type: ignore[no-untyped-def]
        threading_event.wait(30)
        yield b""

    import threading
    threading_event = threading.Event()
    with pytest.raises(grpc.RpcError) as idle:
        list(stream(never_sends(), timeout=30))
    threading_event.set()
    assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    channel.close()
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    agent = workspace.start_agent(workspace.agent_config("node-1", [("syslog", str(log))]))
    wait_for(lambda: workspace.stored_events() >= 1, 60, "an honest agent to be served after the hostile ones")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    assert aggregator.logged("batch rejected", verdict="MALFORMED")


def test_health_metrics_and_readiness_answer(workspace: Workspace) -> None:
    workspace.enrol("node-1")
    metrics_port, health_port = free_port(), free_port()
    aggregator = workspace.start_aggregator(
        extra=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\ngrpc_health_listen = "127.0.0.1:{health_port}"\n')
    for port in (workspace.port, health_port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:  # health only: no Ingest there
        with pytest.raises(grpc.RpcError) as err:
            list(channel.stream_stream(INGEST_STREAM_METHOD)(iter([b""]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    agent = workspace.start_agent(workspace.agent_config("node-1", [("syslog", str(log))]))
    wait_for(lambda: workspace.stored_events() >= 1, 60, "a batch to be stored")
    base = f"http://127.0.0.1:{metrics_port}"
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    assert 'logseal_aggregator_acks_total{node="node-1",status="stored"} 1' in text
    assert "logseal_aggregator_store_writable 1" in text
    assert 'logseal_aggregator_node_key_epoch{node="node-1"} 0' in text
    assert urllib.request.urlopen(base + "/readyz").status == 200
    assert agent.stop() == 0
    assert aggregator.stop() == 0


def test_sighup_enrols_new_keys_without_a_restart(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    workspace.enrol("node-1")
    (workspace.trusted / "node-1.pub").unlink()
    aggregator = workspace.start_aggregator()
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))], extra="[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n"))
    wait_for(lambda: bool(aggregator.logged("batch rejected", verdict="UNKNOWN_NODE")), 60,
             "the unknown node to be refused")
    (workspace.trusted / "node-1.pub").write_bytes((workspace.keys / "node-1.pub").read_bytes())
    aggregator.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: workspace.stored_events() >= 1, 60, "the batch to be stored once the key is enrolled")
    assert aggregator.logged("trusted keys reloaded", nodes=1)
    assert agent.stop() == 0
    assert aggregator.stop() == 0


def test_live_detection_writes_alerts_with_their_rule_and_author(workspace: Workspace) -> None:
    audit = workspace.root / "audit.log"
    audit.write_bytes(b"".join((FALCO / name).read_bytes().rstrip(b"\n") + b"\n"
                               for name in ("create_nginx_pod_privileged.json", "create_nginx_pod_unprivileged.json")))
    workspace.enrol("node-1")
    alerts = workspace.root / "alerts.jsonl"
    aggregator = workspace.start_aggregator(extra=f'[detect]\nrules = ["builtin:all"]\nalerts_file = "{alerts}"\n')
    agent = workspace.start_agent(workspace.agent_config("node-1", [("k8s_audit", str(audit))]))
    wait_for(lambda: alerts.exists() and b"Privileged" in alerts.read_bytes(), 60, "the privileged-pod alert")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    fired = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    privileged = [a for a in fired if a["rule"]["name"] == "Create Privileged Pod"]
    assert len(privileged) == 1  # the unprivileged pod does not fire it
    assert privileged[0]["rule"]["author"] and privileged[0]["rule"]["license"] == "Apache-2.0"
    assert (workspace.store / "detect.state").exists()


def test_alerts_reach_a_webhook_output_configured_in_aggregator_toml(workspace: Workspace) -> None:
    import http.server
    import threading

    received: list[dict[str, object]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(orjson.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        audit = workspace.root / "audit.log"
        audit.write_bytes((FALCO / "create_nginx_pod_privileged.json").read_bytes().rstrip(b"\n") + b"\n")
        workspace.enrol("node-1")
        aggregator = workspace.start_aggregator(extra=(
            '[detect]\nrules = ["builtin:kubernetes"]\n'
            f'[[alert_output]]\ntype = "webhook"\nurl = "http://127.0.0.1:{server.server_address[1]}/alerts"\n'
            'min_level = "low"\n'))
        agent = workspace.start_agent(workspace.agent_config("node-1", [("k8s_audit", str(audit))]))
        wait_for(lambda: any("Create Privileged Pod" in str(a) for a in received), 60, "the alert at the webhook")
        assert agent.stop() == 0
        assert aggregator.stop() == 0
    finally:
        server.shutdown()
        server.server_close()
