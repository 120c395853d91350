"""Alert outputs against real receivers started here: an HTTP server, a TCP syslog listener, a file."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.aggregator.alert_outputs import (
    AlertOutputConfig,
    AlertRouter,
    build_router,
    encode_syslog,
    frame_octet_counted,
)
from agent.detect.alert import Alert
from agent.errors import ConfigError
from tests.aggregator.forward.receivers import SyslogListener as TlsSyslogListener
from tests.tls_material import make_tls_material


def alert(n: int, level: str = "high", rule: str = "r1", user: str = "alice", minute: int = 0) -> Alert:
    when = f"2026-01-01T00:{minute:02d}:{n % 60:02d}Z"
    return Alert(rule, f"Rule {rule}", level, "Jane Doe", "DRL-1.1", "SigmaHQ", ("attack.t1078",), "match",
                 (f"n:s:1:{n}",), (("user.name", user),), when, when, 1, ("node-1",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """An HTTP server that records POSTed alerts; `fail` holds the statuses of the next responses."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail: list[int] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                status = receiver.fail.pop(0) if receiver.fail else 200
                if status == 200:
                    receiver.received.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def ids(self) -> list[str]:
        return [a["logseal"]["alert"]["event_ids"][0] for a in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


FRAME = re.compile(rb"(\d+) ")
RFC5424 = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?[^\\]\]) (.*)$", re.DOTALL)


class SyslogListener:
    """A TCP syslog receiver that parses octet-counted frames (RFC 6587 3.4.1) into RFC 5424 parts."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while chunk := conn.recv(65536):
                    buf += chunk
                    while (m := FRAME.match(buf)) and len(buf) >= m.end() + int(m.group(1)):
                        self.messages.append(buf[m.end():m.end() + int(m.group(1))].decode())
                        buf = buf[m.end() + int(m.group(1)):]
                assert buf == b"", f"bytes outside any frame: {buf!r}"

    def wait(self, n: int) -> list[re.Match[str]]:
        for _ in range(200):
            if len(self.messages) >= n:
                break
            threading.Event().wait(0.01)
        parsed = [RFC5424.match(m) for m in self.messages]
        assert all(parsed), self.messages
        return [p for p in parsed if p]

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        self.thread.join(timeout=5)


def test_the_file_output_appends_alert_json_lines_at_or_above_its_level(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    router = build_router([AlertOutputConfig(type="file", path=out, min_level="medium")], tmp_path / "state")
    router.submit([alert(1, "low"), alert(2, "medium"), alert(3, "critical")])
    assert router.deliver_pending() == 2
    router.close()
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["rule"]["level"] for d in docs] == ["medium", "critical"]
    assert docs[0] == alert(2, "medium").to_dict()
    assert router.stats()[router.outputs[0].config.key]["below_min_level"] == 1


def test_the_webhook_posts_each_alert_as_ecs_json(tmp_path: Path, receiver: Receiver) -> None:
    router = build_router([AlertOutputConfig(type="webhook", url=receiver.url)], tmp_path)
    router.submit([alert(1), alert(2)])
    assert router.deliver_pending() == 2
    router.close()
    assert receiver.received == [alert(1).to_dict(), alert(2).to_dict()]
    doc = receiver.received[0]
    assert doc["event"]["kind"] == "alert" and doc["event"]["severity"] == 73
    assert doc["threat"]["technique"]["id"] == ["T1078"] and doc["rule"]["author"] == "Jane Doe"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert receiver.headers[0]["Idempotency-Key"] == doc["event"]["id"] == alert(1).alert_id


def test_a_5xx_is_retried_after_a_backoff_in_order(tmp_path: Path, receiver: Receiver) -> None:
    clock = Clock()
    cfg = AlertOutputConfig(type="webhook", url=receiver.url, backoff_initial_ms=2000)
    router = build_router([cfg], tmp_path, clock=clock)
    receiver.fail = [503, 500]
    router.submit([alert(1), alert(2), alert(3)])
    assert router.deliver_pending() == 0 and receiver.attempts == 1
    assert router.deliver_pending() == 0 and receiver.attempts == 1  # backing off: no attempt
    clock.now += 2.0
    assert router.deliver_pending() == 0 and receiver.attempts == 2  # failed again: now 4 s
    clock.now += 3.9
    assert router.deliver_pending() == 0 and receiver.attempts == 2
    clock.now += 0.1
    assert router.deliver_pending() == 3
    assert receiver.ids() == ["n:s:1:1", "n:s:1:2", "n:s:1:3"]
    router.close()
    assert router.stats()[cfg.key] == {"retries": 2, "delivered": 3, "failing": 0}


def test_a_400_goes_to_the_dead_letter_file_and_the_rest_flow(tmp_path: Path, receiver: Receiver) -> None:
    cfg = AlertOutputConfig(type="webhook", url=receiver.url)
    router = build_router([cfg], tmp_path)
    receiver.fail = [400]
    router.submit([alert(1), alert(2)])
    assert router.deliver_pending() == 1
    router.close()
    assert receiver.ids() == ["n:s:1:2"]
    (dead,) = [json.loads(line) for line in (tmp_path / "dead-letter" / f"{cfg.key}.jsonl").read_text().splitlines()]
    assert dead["reason"].endswith("HTTP 400") and dead["alert"] == alert(1).to_dict()


def test_an_outage_across_a_restart_delays_alerts_but_loses_none(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    configs = [AlertOutputConfig(type="webhook", url=url, backoff_initial_ms=1),
               AlertOutputConfig(type="file", path=tmp_path / "alerts.jsonl")]
    router = build_router(configs, tmp_path / "state")
    router.submit([alert(i) for i in range(5)])
    assert router.deliver_pending() == 5  # the file got them; the webhook is down
    router.close()  # the aggregator stops during the outage
    router = build_router(configs, tmp_path / "state")
    router.submit([alert(i) for i in range(5, 8)])
    assert router.deliver_pending() == 3  # file only
    up = Receiver(port)
    try:
        threading.Event().wait(0.01)
        assert router.deliver_pending() == 8
        assert router.deliver_pending() == 0  # nothing twice
        assert up.ids() == [f"n:s:1:{i}" for i in range(8)]
    finally:
        router.close()
        up.stop()
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 8


def test_repeats_within_the_window_are_counted_and_the_next_alert_carries_the_count(
        tmp_path: Path, receiver: Receiver) -> None:
    router = build_router([AlertOutputConfig(type="webhook", url=receiver.url, suppress_window_s=60)], tmp_path)
    burst = [alert(i, minute=0) for i in range(5)]  # 00:00:00 .. 00:00:04, same rule and user
    other = alert(9, user="bob")  # another group key: never held back by alice's
    later = alert(1, minute=2)  # 00:02:01: after the window
    router.submit([*burst, other, later])
    assert router.deliver_pending() == 3
    router.close()
    got = [(a["logseal"]["alert"]["group"]["user.name"], a["logseal"]["alert"]["suppressed_count"])
           for a in receiver.received]
    assert got == [("alice", 0), ("bob", 0), ("alice", 4)]
    assert router.stats()[router.outputs[0].config.key]["suppressed"] == 4


def test_suppression_state_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    configs = [AlertOutputConfig(type="webhook", url=receiver.url, suppress_window_s=60)]
    router = build_router(configs, tmp_path)
    router.submit([alert(0), alert(1)])
    router.deliver_pending()
    router.close()
    router = build_router(configs, tmp_path)
    router.submit([alert(2), alert(5, minute=3)])
    router.deliver_pending()
    router.close()
    assert [a["logseal"]["alert"]["suppressed_count"] for a in receiver.received] == [0, 2]


def test_syslog_sends_octet_counted_rfc5424_frames(tmp_path: Path) -> None:
    listener = SyslogListener()
    try:
        router = build_router([AlertOutputConfig(type="syslog", address=f"127.0.0.1:{listener.port}")], tmp_path,
                              hostname="aggregator-0")
        router.submit([alert(1, "critical"), alert(2, "medium")])
        assert router.deliver_pending() == 2
        router.close()
        first, second = listener.wait(2)
    finally:
        listener.stop()
    assert first.group(1) == str(13 * 8 + 2) and second.group(1) == str(13 * 8 + 4)
    assert first.group(2) == "2026-01-01T00:00:01Z" and first.group(3) == "aggregator-0"
    assert (first.group(4), first.group(5), first.group(6)) == ("logseal", "-", "ALERT")
    assert f'id="{alert(1).alert_id}"' in first.group(7) and 'rule="Rule r1"' in first.group(7)
    assert json.loads(first.group(8)) == alert(1, "critical").to_dict()


def test_syslog_outage_then_recovery_delivers_everything_once(tmp_path: Path) -> None:
    port = free_port()
    clock = Clock()
    router = build_router([AlertOutputConfig(type="syslog", address=f"127.0.0.1:{port}", backoff_initial_ms=500)],
                          tmp_path, clock=clock)
    router.submit([alert(i) for i in range(3)])
    assert router.deliver_pending() == 0
    listener = SyslogListener(port)
    try:
        assert router.deliver_pending() == 0  # still backing off
        clock.now += 1
        assert router.deliver_pending() == 3
        router.close()
        got = [json.loads(m.group(8))["logseal"]["alert"]["event_ids"][0] for m in listener.wait(3)]
    finally:
        listener.stop()
    assert got == ["n:s:1:0", "n:s:1:1", "n:s:1:2"]


def test_syslog_over_tls_delivers_to_a_receiver_the_ca_signed_on_one_connection(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "tls")
    listener = TlsSyslogListener(tls=(tls["server"], tls["server-key"]))
    try:
        config = AlertOutputConfig(type="syslog", address=f"127.0.0.1:{listener.port}", tls_ca=tls["ca"])
        router = build_router([config], tmp_path / "state", hostname="aggregator-0")
        router.submit([alert(1, "critical"), alert(2, "medium")])
        assert router.deliver_pending() == 2
        router.submit([alert(3, "low")])  # a later pass reuses the connection (TLS 1.3 tickets are not a close)
        assert router.deliver_pending() == 1
        router.close()
        messages = listener.wait(3)
    finally:
        listener.stop()
    assert listener.problems == [] and listener.handshake_failures == 0 and listener.connections == 1
    assert [m.group("pri") for m in messages] == [str(13 * 8 + 2), str(13 * 8 + 4), str(13 * 8 + 5)]
    assert [json.loads(m.group("msg")) for m in messages] == [alert(1, "critical").to_dict(),
                                                              alert(2, "medium").to_dict(), alert(3, "low").to_dict()]


def test_syslog_over_tls_refuses_a_receiver_of_another_ca(tmp_path: Path) -> None:
    tls, other = make_tls_material(tmp_path / "tls"), make_tls_material(tmp_path / "other")
    listener = TlsSyslogListener(tls=(tls["server"], tls["server-key"]))
    try:
        config = AlertOutputConfig(type="syslog", address=f"127.0.0.1:{listener.port}", tls_ca=other["ca"])
        router = build_router([config], tmp_path / "state")
        router.submit([alert(1)])
        assert router.deliver_pending() == 0
        stats = router.stats()[config.key]
        router.close()
    finally:
        listener.stop()
    assert stats["failing"] == 1 and stats["retries"] >= 1 and listener.messages == []


def test_the_background_thread_delivers_soon_after_submit(tmp_path: Path, receiver: Receiver) -> None:
    router = build_router([AlertOutputConfig(type="webhook", url=receiver.url)], tmp_path)
    router.start(interval_s=5)
    router.submit([alert(1)])
    for _ in range(200):
        if receiver.received:
            break
        threading.Event().wait(0.01)
    router.close()
    assert receiver.ids() == ["n:s:1:1"]


def test_a_torn_outbox_tail_is_cut_and_a_bad_cursor_file_resends_rather_than_loses(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    configs = [AlertOutputConfig(type="file", path=out)]
    router = build_router(configs, tmp_path / "state")
    router.submit([alert(1)])
    router.close()
    (seg,) = (tmp_path / "state" / "outbox").glob("*.jsonl")
    with seg.open("ab") as f:
        f.write(b'{"torn":')
    (tmp_path / "state" / "cursors.json").write_text("garbage")
    router = build_router(configs, tmp_path / "state")
    assert router.deliver_pending() == 1  # alert 1 again: at least once
    router.close()
    assert [json.loads(x)["logseal"]["alert"]["event_ids"] for x in out.read_text().splitlines()] == [
        ["n:s:1:1"], ["n:s:1:1"]]


def test_outbox_segments_are_deleted_once_every_output_passed_them(tmp_path: Path) -> None:
    router = AlertRouter([], tmp_path)
    router.outbox.segment_max_bytes = 100
    router.close()
    router = build_router([AlertOutputConfig(type="file", path=tmp_path / "a.jsonl")], tmp_path / "s")
    router.outbox.segment_max_bytes = 600
    for i in range(10):
        router.submit([alert(i)])
    assert len(list((tmp_path / "s" / "outbox").glob("*.jsonl"))) > 2
    assert router.deliver_pending() == 10
    router.close()
    assert len(list((tmp_path / "s" / "outbox").glob("*.jsonl"))) == 1
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 10


def test_the_syslog_encoder_alone() -> None:
    doc = alert(1).to_dict()
    doc["rule"]["name"] = 'quote " and ] and \\'
    message = encode_syslog(doc, "host with space")
    assert message.startswith(b"<107>1 2026-01-01T00:00:01Z hostwithspace logseal - ALERT [logseal@32473 ")
    assert b'rule="quote \\" and \\] and \\\\"' in message
    assert frame_octet_counted(b"abc") == b"3 abc"


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"type": "kafka"}, "type"), ({"type": "file"}, "path"), ({"type": "webhook", "url": "ftp://x"}, "url"),
    ({"type": "syslog", "address": "nohost"}, "address"),
    ({"type": "file", "path": Path("x"), "min_level": "urgent"}, "min_level"),
    ({"type": "file", "path": Path("x"), "suppress_window_s": -1}, "suppress_window_s"),
])
def test_bad_output_config_names_the_key(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"alert_output\.{key}:"):
        AlertOutputConfig(**kwargs)


def test_two_outputs_with_the_same_target_need_names(tmp_path: Path) -> None:
    cfg = AlertOutputConfig(type="file", path=tmp_path / "a")
    with pytest.raises(ConfigError, match="share the name"):
        build_router([cfg, cfg], tmp_path)


def test_the_detection_shell_routes_sigma_and_baseline_alerts_to_every_output(tmp_path: Path,
                                                                               receiver: Receiver) -> None:
    from agent.aggregator.detection import DetectionShell
    from agent.detect.baseline import BaselineConfig

    baselines = BaselineConfig(warmup_events=2, warmup_minutes=0, entity_warmup_events=0, rate_spikes=False,
                               new_sources=False, new_combinations=False, new_terms=(("process.name",),))
    shell = DetectionShell(["builtin:logseal"], tmp_path, None,
                           [AlertOutputConfig(type="webhook", url=receiver.url, min_level="medium")], baselines)
    for i, name in enumerate(["sshd", "sshd", "sshd", "nc"]):
        shell.submit_event({"@timestamp": f"2026-01-01T00:00:0{i}Z", "host": {"name": "n"},
                            "event": {"dataset": "system.auth", "id": f"e{i}"}, "process": {"name": name}})
    shell.close()
    local = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["rule"]["id"] for a in local] == ["logseal-baseline-new-terms-process.name"]
    assert local[0]["anomaly"]["observed"] == '["nc"]' and local[0]["logseal"]["alert"]["event_ids"] == ["e3"]
    assert local[0]["rule"]["level"] == "medium"  # p(new) = (1+1)/(3+2): score 60
    assert receiver.received == local
    assert (tmp_path / "baseline.state").exists() and (tmp_path / "detect.state").exists()
