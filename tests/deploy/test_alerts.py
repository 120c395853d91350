"""packaging/prometheus-alerts.yaml and docs/metrics.md agree, and the metric names obey agent/metrics.py.

Every metric an alert names is in the documented table (the names the daemons export); every alert
links to a section of docs/responding-to-alerts.md that exists; each documented metric can be
declared in a Registry with its type and labels. `promtool check rules` runs when installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from agent.metrics import Registry

ROOT = Path(__file__).parents[2]
RULES = ROOT / "packaging/prometheus-alerts.yaml"
BUILTIN = {"up"}  # made by Prometheus itself for every scrape target
PROMQL_WORDS = {"sum", "by", "increase", "rate", "max", "time", "and", "predict_linear", "histogram_quantile", "le",
                "job", "status", "verdict", "level", "result", "instance", "source", "reason", "node", "rule"}


def documented() -> dict[str, tuple[str, list[str]]]:
    table: dict[str, tuple[str, list[str]]] = {}
    for line in (ROOT / "docs/metrics.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_:]+)` \| (counter|gauge|histogram) \|([^|]*)\|", line)
        if m:
            labels = re.findall(r"`([a-z_]+)`", m.group(3))
            assert m.group(1) not in table, f"{m.group(1)} documented twice"
            table[m.group(1)] = (m.group(2), labels)
    return table


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def anchors() -> set[str]:
    text = (ROOT / "docs/responding-to-alerts.md").read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_documented_metrics_are_valid_declarations() -> None:
    table = documented()
    assert len(table) >= 30
    registry = Registry()
    for name, (kind, labels) in table.items():
        if name == "logseal_metrics_collect_errors_total":
            continue  # every Registry declares it itself
        getattr(registry, kind)(name, "doc", labels)  # raises on a bad name, label or counter suffix
        assert name.startswith(("logseal_agent_", "logseal_aggregator_", "logseal_build_", "process_")), name


def test_every_metric_in_an_alert_is_documented() -> None:
    table = documented()
    series = set(table) | {f"{n}_{s}" for n, (k, _) in table.items() if k == "histogram" for s in ("bucket", "sum",
                                                                                                  "count")}
    for rule in rules():
        expr = re.sub(r'"[^"]*"', "", rule["expr"])  # label values
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
        names = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)) - PROMQL_WORDS - BUILTIN
        unknown = {n for n in names if n not in series}
        assert not unknown, f"{rule['alert']}: {unknown} not in docs/metrics.md"
        labels = set(re.findall(r"([a-z_]+)\s*[=!]~?\s*\"", rule["expr"]))
        for metric in names & set(table):
            if re.search(rf"\b{metric}\{{", rule["expr"]):
                assert labels - {"job"} <= set(table[metric][1]), (rule["alert"], metric, labels)


def test_rules_are_complete_and_link_to_their_runbook() -> None:
    seen = set()
    sections = anchors()
    for rule in rules():
        name = rule["alert"]
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert rule["annotations"]["runbook_url"].startswith("docs/responding-to-alerts.md#")
        assert anchor == name.lower() and anchor in sections, f"{name}: no section '{anchor}'"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_promtool_when_available() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # optional; the structural checks above always run
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
