"""`logseal bench --json` runs end to end and reports every figure (the figures themselves are not
asserted: speed belongs to the benchmark, not to the test suite)."""

from __future__ import annotations

import orjson

from agent.bench import generate_audit_events
from tests.conftest import run_cli

FIGURES = {"agent_events_per_s", "e2e_events_per_s", "agent_cpu_s_per_million_events", "agent_peak_rss_mib",
           "compression_ratio"}


def test_bench_reports_every_figure_as_json() -> None:
    result = run_cli("bench", "--events", "3000", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    figures = orjson.loads(result.stdout)
    assert set(figures) >= FIGURES
    assert figures["events"] == 3000
    assert all(figures[name] > 0 for name in FIGURES)
    assert figures["detect_events_per_s"] > 0
    per_family = figures["normalize_events_per_s"]
    assert {"k8s_audit", "auditd", "syslog"} <= set(per_family)
    assert all(rate > 0 for rate in per_family.values())


def test_generated_events_are_realistic_audit_events() -> None:
    events = [orjson.loads(line) for line in generate_audit_events(500)]
    sizes = [len(line) for line in generate_audit_events(500)]
    assert 1024 <= sum(sizes) / len(sizes) <= 2048
    assert {e["level"] for e in events} == {"Metadata", "RequestResponse"}
    assert len({e["verb"] for e in events}) >= 6 and len({e["user"]["username"] for e in events}) >= 4


def test_too_few_events_is_a_usage_error() -> None:
    result = run_cli("bench", "--events", "10")
    assert result.returncode == 2 and "at least 1000" in result.stderr
