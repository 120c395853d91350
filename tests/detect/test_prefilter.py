"""The prefilter never skips a rule that could match.

`RuleIndex.match` evaluates only the rules whose indexed anchors hold, sharing one view per
document between them; `RuleIndex.match_unfiltered` evaluates every rule of the event's dataset,
each on fresh views. Over every event of the test corpora (Falco's Kubernetes traces, Panther's
Kubernetes logs, go-libaudit's auditd logs, the syslog and journald corpora, the shipped samples,
the bench generator) and over seeded random mutations of them that put the rules' own anchor
values (in mixed case) into the indexed fields, both must return the same rules in the same order.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.bench import generate_audit_events
from agent.detect import Detector
from agent.detect.engine import materialize
from agent.detect.fields import KUBERNETES_FIELDS, get_values, split_path
from agent.normalize import SourceContext, assembler_for

DATA = Path(__file__).parent.parent / "data"
SAMPLES = Path(__file__).parent.parent.parent / "agent" / "samples"
RECEIVED = "2026-01-01T00:00:00.000000Z"
OVERRIDES = sorted(str(p) for p in (DATA / "falco" / "overrides").glob("*.yml"))


def normalized(source_type: str, path: Path, lines: list[bytes] | None = None) -> list[dict[str, Any]]:
    assembler = assembler_for(source_type, SourceContext("node-1", str(path)))
    events, offset = [], 0
    for line in lines if lines is not None else path.read_bytes().split(b"\n"):
        if line:
            events += assembler.feed(line, offset, RECEIVED)
        offset += len(line) + 1
    return [materialize(e) for e in events + assembler.flush(RECEIVED, force=True)]  # as `Detector.process` sees them


def corpus() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted((DATA / "falco").glob("*.json")):
        events += normalized("k8s_audit", path)
    events += normalized("k8s_audit", DATA / "panther" / "k8s_secret_access_denied.jsonl")
    events += normalized("k8s_audit", SAMPLES / "k8s-audit.log")
    events += normalized("k8s_audit", Path("bench.log"), generate_audit_events(600, seed=7))
    for path in sorted((DATA / "go-libaudit").rglob("*.log")):
        events += normalized("auditd", path)
    events += normalized("auditd", SAMPLES / "audit.log")
    syslog_lines = [json.loads(t)["line"].encode() for t in (DATA / "syslog" / "corpus.jsonl").read_text().splitlines()
                    if t and "line" in json.loads(t)]
    events += normalized("syslog", Path("/var/log/auth.log"), syslog_lines)
    events += normalized("syslog", SAMPLES / "auth.log")
    for path in [*sorted((DATA / "journald").glob("*.export")), SAMPLES / "journal.export"]:
        events += normalized("journald", path)
    events += normalized("cri", SAMPLES / "containers.log")
    return events


def _set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nxt = doc.get(key)
        if not isinstance(nxt, dict):
            nxt = doc[key] = {}
        doc = nxt
    doc[path[-1]] = value


def _case_mixed(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


def mutations(events: list[dict[str, Any]], detector: Detector, count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Events with anchored fields set to values the rules anchor on (or other corpus values)."""
    rng = random.Random(seed)
    pools: dict[tuple[str, str], list[str]] = {}
    for rule in detector.rules:
        for anchor in rule.detection.anchors:
            pools.setdefault((rule.route.name, anchor.field), []).extend(sorted(anchor.values))
    # plain audit fields only: a mapped name (`privileged`, `hostPath`, ...) reads several other paths
    k8s_fields = sorted(f for route, f in pools if route == "kubernetes/audit" and f not in KUBERNETES_FIELDS)
    auth_fields = sorted({f for route, f in pools if route in ("linux/sshd", "linux/auth")})
    k8s_events = [e for e in events if get_values(e, ("event", "dataset")) == ["kubernetes.audit"]]
    auth_events = [e for e in events if get_values(e, ("event", "dataset")) in (["system.auth"], ["journald"])]
    for _ in range(count):
        if rng.random() < 0.7 and k8s_events:
            event = copy.deepcopy(rng.choice(k8s_events))
            audit = event.setdefault("kubernetes", {}).setdefault("audit", {})
            for field in rng.sample(k8s_fields, k=min(len(k8s_fields), rng.randint(1, 4))):
                value = rng.choice(pools[("kubernetes/audit", field)])
                _set_path(audit, split_path(field), _case_mixed(rng, value))
        elif auth_events:
            event = copy.deepcopy(rng.choice(auth_events))
            for field in rng.sample(auth_fields, k=min(len(auth_fields), rng.randint(1, 2))):
                route = rng.choice(["linux/sshd", "linux/auth"])
                value = rng.choice(pools.get((route, field)) or ["x"])
                _set_path(event, split_path(field), _case_mixed(rng, value))
        else:
            continue
        yield event


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(["builtin:all", *OVERRIDES])


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return corpus()


def ordinals(matches: list[Any]) -> list[int]:
    return [rule.ordinal for rule, _ in matches]


def test_the_corpora_cover_every_family(events: list[dict[str, Any]]) -> None:
    datasets = {v for e in events for v in get_values(e, ("event", "dataset"))}
    assert {"kubernetes.audit", "auditd.log", "system.auth", "system.syslog", "journald"} <= datasets
    assert len(events) > 900


def test_prefiltered_and_unfiltered_evaluation_agree_on_every_corpus_event(
        detector: Detector, events: list[dict[str, Any]]) -> None:
    fired = skipped = 0
    for event in events:
        prefiltered = ordinals(detector.index.match(event))
        assert prefiltered == ordinals(detector.index.match_unfiltered(event)), event.get("event")
        fired += len(prefiltered)
        dataset = get_values(event, ("event", "dataset"))[:1]
        routed = sum(1 for r in detector.rules if dataset and dataset[0] in r.route.datasets)
        skipped += routed - len(detector.index.candidates(event))
    assert fired > 500  # the comparison covers many matches ...
    assert skipped > 10 * len(events)  # ... and the prefilter really skips rules


@pytest.mark.parametrize("seed", range(3))
def test_prefiltered_and_unfiltered_evaluation_agree_on_mutated_events(
        detector: Detector, events: list[dict[str, Any]], seed: int) -> None:
    fired = 0
    for event in mutations(events, detector, 1500, seed):
        prefiltered = ordinals(detector.index.match(event))
        assert prefiltered == ordinals(detector.index.match_unfiltered(event)), event
        fired += len(prefiltered)
    assert fired > 1000


def test_a_rule_anchored_on_an_event_value_is_a_candidate_whatever_its_case(detector: Detector) -> None:
    event = {"@timestamp": RECEIVED, "event": {"dataset": "kubernetes.audit", "id": "e"},
             "kubernetes": {"audit": {"verb": "CREATE", "stage": "ResponseComplete",
                                      "objectRef": {"resource": "Pods", "subresource": "EXEC"}}}}
    titles = {r.title for r in detector.index.candidates(event)}
    assert "Potential Remote Command Execution In Pod Container" in titles
    assert {r.title for r, _ in detector.index.match(event)} >= {"Potential Remote Command Execution In Pod Container"}
