"""Falco's Kubernetes audit traces fire our Sigma ports exactly as Falco's own tests expect.

Each case of `expected_firings.tsv` loads `builtin:kubernetes` plus our translations of the
Falco override files the case names. A positive case fires the named ported rule the expected
number of times; a negative case (unprivileged pod, trusted image, no hostNetwork, configmap
without credentials, the malformed event, ...) fires no ported rule at all.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from agent.detect import Detector
from agent.normalize import SourceContext, assembler_for

DATA = Path(__file__).parent.parent / "data" / "falco"
RENAMED = {  # 2022 rule names in the test table -> names in the current Falco rules file
    "K8s Role/Clusterrole Created": "K8s ClusterRole Created",
    "K8s Role/Clusterrole Deleted": "K8s ClusterRole Deleted",
    "K8s Role/Clusterrolebinding Created": "K8s ClusterRoleBinding Created",
    "K8s Role/Clusterrolebinding Deleted": "K8s ClusterRoleBinding Deleted",
}
CASES = list(csv.DictReader((DATA / "expected_firings.tsv").read_text(encoding="utf-8").splitlines(), delimiter="\t"))
RECEIVED = "2026-01-01T00:00:00.000000Z"


def trace_events(name: str) -> list[dict[str, Any]]:
    assembler = assembler_for("k8s_audit", SourceContext("cp-1", name))
    events, offset = [], 0
    for line in (DATA / name).read_bytes().split(b"\n"):
        if line:
            events += assembler.feed(line, offset, RECEIVED)
        offset += len(line) + 1
    return events + assembler.flush(RECEIVED, force=True)


def ported_firings(case: dict[str, str]) -> dict[str, int]:
    overrides = [f for f in case["extra_rule_files"].split(",") if f and not f.startswith("engine_v4")]
    specs = ["builtin:kubernetes"] + [str(DATA / "overrides" / f.replace(".yaml", ".yml")) for f in overrides]
    detector = Detector.load(specs)
    fired: dict[str, int] = {}
    for event in trace_events(case["trace_file"]):
        for alert in detector.process(event):
            if alert.ruleset.startswith("logseal port of Falco") or alert.ruleset == "custom":
                fired[alert.rule_title] = fired.get(alert.rule_title, 0) + 1
    return fired


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_falco_case(case: dict[str, str]) -> None:
    fired = ported_firings(case)
    if case["detect"] == "True":
        rule, count = case["detect_counts"].rsplit("=", 1)
        assert fired.get(RENAMED.get(rule, rule)) == int(count), fired
    else:
        assert fired == {}


def test_every_case_is_covered() -> None:
    assert len(CASES) == 48
    assert sum(c["detect"] == "True" for c in CASES) == 31
