"""agent.metrics: the exposition format, the registry's rules, and the HTTP server scraped for real."""

from __future__ import annotations

import http.client
import math
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.metrics import (
    CONTENT_TYPE,
    MetricsError,
    MetricsServer,
    Readiness,
    Registry,
    parse_listen,
    register_process_metrics,
)


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def server(registry: Registry) -> Iterator[MetricsServer]:
    state = {"ready": Readiness.not_ready("aggregator not connected")}
    srv = MetricsServer(registry, "127.0.0.1:0", ready=lambda: state["ready"])
    srv.state = state  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def test_text_format_of_counters_gauges_histograms(registry: Registry) -> None:
    lines = registry.counter("logseal_agent_lines_read_total", "Lines read.", ["source"])
    lines.labels("k8s_audit").inc(3)
    lines.labels(source="auditd").inc()
    spool = registry.gauge("logseal_agent_spool_bytes", "Bytes in the spool.")
    spool.set(1536)
    latency = registry.histogram("logseal_test_latency_seconds", "Latency.", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 7.0):
        latency.observe(v)
    text = registry.render().decode()
    assert "# HELP logseal_agent_lines_read_total Lines read.\n# TYPE logseal_agent_lines_read_total counter\n" in text
    assert 'logseal_agent_lines_read_total{source="auditd"} 1\n' in text
    assert 'logseal_agent_lines_read_total{source="k8s_audit"} 3\n' in text
    assert "# TYPE logseal_agent_spool_bytes gauge\nlogseal_agent_spool_bytes 1536\n" in text
    assert 'logseal_test_latency_seconds_bucket{le="0.1"} 1\n' in text
    assert 'logseal_test_latency_seconds_bucket{le="1"} 3\n' in text
    assert 'logseal_test_latency_seconds_bucket{le="+Inf"} 4\n' in text
    assert "logseal_test_latency_seconds_sum 8.05\n" in text
    assert "logseal_test_latency_seconds_count 4\n" in text
    assert text.endswith("\n")
    # every sample line is `name{labels} value` as the format defines
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? \S+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line


def test_label_values_and_help_are_escaped(registry: Registry) -> None:
    gaps = registry.counter("logseal_agent_gaps_total", 'Gaps\\ "by" reason\nsecond line', ["path"])
    gaps.labels('/var/log/a"b\\c\nd.log').inc()
    text = registry.render().decode()
    assert '# HELP logseal_agent_gaps_total Gaps\\\\ "by" reason\\nsecond line\n' in text
    assert 'logseal_agent_gaps_total{path="/var/log/a\\"b\\\\c\\nd.log"} 1\n' in text


def test_special_float_values(registry: Registry) -> None:
    g = registry.gauge("logseal_test_values", "Values.", ["case"])
    g.labels("nan").set(math.nan)
    g.labels("inf").set(math.inf)
    g.labels("neg").set(-math.inf)
    g.labels("frac").set(0.25)
    text = registry.render().decode()
    for expected in ('case="nan"} NaN', 'case="inf"} +Inf', 'case="neg"} -Inf', 'case="frac"} 0.25'):
        assert expected in text


def test_registry_rejects_misuse(registry: Registry) -> None:
    x = registry.counter("logseal_x_total", "x", ["reason"])
    with pytest.raises(MetricsError, match="already registered"):
        registry.gauge("logseal_x_total", "again")
    with pytest.raises(MetricsError, match="must end in _total"):
        registry.counter("logseal_batches", "no suffix")
    with pytest.raises(MetricsError, match="invalid metric name"):
        registry.gauge("logseal-bad", "dash")
    with pytest.raises(MetricsError, match="invalid label name"):
        registry.gauge("logseal_y", "reserved", ["le"])
    h = registry.histogram("logseal_h_seconds", "h")
    with pytest.raises(MetricsError, match="already registered"):
        registry.gauge("logseal_h_seconds_count", "clash with a histogram series")
    with pytest.raises(MetricsError, match="only goes up"):
        x.labels("r").inc(-1)
    with pytest.raises(MetricsError, match="expected 1 label values"):
        x.labels()
    with pytest.raises(MetricsError, match="use .labels"):
        registry.counter("logseal_z_total", "z", ["a"]).inc()
    with pytest.raises(MetricsError, match="strictly increasing"):
        registry.histogram("logseal_b_seconds", "b", buckets=(1.0, 0.5))
    h.observe(0.001)


def test_concurrent_increments_are_not_lost(registry: Registry) -> None:
    c = registry.counter("logseal_concurrent_total", "c", ["t"])

    def work() -> None:
        for _ in range(10_000):
            c.labels("x").inc()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.labels("x").get() == 80_000


def test_collect_callbacks_refresh_and_a_failing_one_does_not_break_the_scrape(registry: Registry) -> None:
    age = registry.gauge("logseal_agent_spool_oldest_unacked_age_seconds", "Age.")
    ticks = iter([12.5, 13.0])
    registry.on_collect(lambda: age.set(next(ticks)))

    def broken() -> None:
        raise RuntimeError("store vanished")

    registry.on_collect(broken)
    assert "logseal_agent_spool_oldest_unacked_age_seconds 12.5\n" in registry.render().decode()
    text = registry.render().decode()
    assert "logseal_agent_spool_oldest_unacked_age_seconds 13\n" in text
    assert "logseal_metrics_collect_errors_total 2\n" in text


def test_metrics_over_http(server: MetricsServer, registry: Registry) -> None:
    assert server.port > 0
    registry.counter("logseal_agent_reconnects_total", "Reconnects.").inc(2)
    status, body, headers = fetch(server.port, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    assert "logseal_agent_reconnects_total 2\n" in body
    status, body, _ = fetch(server.port, "/metrics?name[]=x")  # query strings are ignored, as Prometheus sends none
    assert status == 200
    status, body, _ = fetch(server.port, "/nope")
    assert status == 404
    status, body, headers = fetch(server.port, "/metrics", method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 0
    status, _, headers = fetch(server.port, "/metrics", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_healthz_and_readyz_follow_the_checks(server: MetricsServer) -> None:
    state = server.state  # type: ignore[attr-defined]
    assert fetch(server.port, "/healthz")[:2] == (200, "ok\n")
    assert fetch(server.port, "/readyz")[:2] == (503, "aggregator not connected\n")
    state["ready"] = Readiness.ok()
    assert fetch(server.port, "/readyz")[:2] == (200, "ok\n")
    state["ready"] = False
    assert fetch(server.port, "/readyz")[:2] == (503, "not ready\n")
    state["ready"] = True
    assert fetch(server.port, "/readyz")[0] == 200


def test_a_raising_check_is_a_503_with_the_reason_and_the_server_lives_on(registry: Registry) -> None:
    def explode() -> bool:
        raise OSError("spool dir not writable")

    with MetricsServer(registry, "127.0.0.1:0", ready=explode, alive=lambda: Readiness.not_ready("seal worker stuck")
                       ) as srv:
        status, body, _ = fetch(srv.port, "/readyz")
        assert status == 503 and body == "check failed: OSError: spool dir not writable\n"
        assert fetch(srv.port, "/healthz")[:2] == (503, "seal worker stuck\n")
        assert fetch(srv.port, "/metrics")[0] == 200


def test_keep_alive_connection_serves_several_requests(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ("/metrics", "/healthz", "/metrics"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


def test_stop_releases_the_port_and_start_twice_is_an_error(registry: Registry) -> None:
    srv = MetricsServer(registry, "127.0.0.1:0")
    srv.start()
    port = srv.port
    with pytest.raises(MetricsError, match="already started"):
        srv.start()
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(MetricsError, match="not started"):
        _ = srv.port
    again = MetricsServer(registry, f"127.0.0.1:{port}")  # the port is free again
    again.start()
    assert again.port == port
    again.stop()


def test_ipv6_listen(registry: Registry) -> None:
    srv = MetricsServer(registry, "[::1]:0")
    try:
        srv.start()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        conn = http.client.HTTPConnection("::1", srv.port, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        srv.stop()


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9600") == ("0.0.0.0", 9600)
    assert parse_listen("[::]:0") == ("::", 0)
    for bad in ("9600", "host:", "host:99999", "host:x"):
        with pytest.raises(MetricsError, match="not host:port"):
            parse_listen(bad)


def test_process_metrics(registry: Registry) -> None:
    register_process_metrics(registry, "0.1.0", "agent")
    text = registry.render().decode()
    assert 'logseal_build_info{version="0.1.0",component="agent"} 1\n' in text
    rss = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
    assert rss is not None and float(rss.group(1)) > 1_000_000
    assert re.search(r"^process_cpu_seconds_total \S+$", text, re.M)
    assert re.search(r"^process_open_fds [1-9]\d*$", text, re.M)


def test_the_reference_parser_reads_our_output(registry: Registry) -> None:
    """Cross-check with prometheus_client's own parser, when the test extras provide it."""
    parser = pytest.importorskip("prometheus_client.parser")
    registry.counter("logseal_agent_batches_acked_total", "Acks.", ["source", "status"]).labels(
        "k8s_audit", "stored").inc(5)
    registry.histogram("logseal_aggregator_detection_latency_seconds", "Latency.").observe(0.2)
    registry.gauge("logseal_agent_file_lag_bytes", "Lag.", ["source", "path"]).labels(
        "syslog", '/var/log/"odd"\\name').set(42)
    families = {f.name: f for f in parser.text_string_to_metric_families(registry.render().decode())}
    acked = families["logseal_agent_batches_acked"]
    assert acked.type == "counter"
    assert [(s.labels, s.value) for s in acked.samples if s.name.endswith("_total")] == [
        ({"source": "k8s_audit", "status": "stored"}, 5.0)]
    lag = families["logseal_agent_file_lag_bytes"].samples[0]
    assert lag.labels["path"] == '/var/log/"odd"\\name' and lag.value == 42
    hist = families["logseal_aggregator_detection_latency_seconds"]
    assert hist.type == "histogram"
    assert {s.name for s in hist.samples} >= {"logseal_aggregator_detection_latency_seconds_bucket",
                                               "logseal_aggregator_detection_latency_seconds_count"}
