"""Correlation rules: the Sigma specification's test documents, chaining, aliases, time and bounded state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.detect import Detector, Limits, RuleError

from .helpers import at, detector, generic

SPEC = Path(__file__).parent.parent / "data" / "sigma" / "spec-tests"


def base(rule_id: str, name: str | None = None, **match: str) -> str:
    sel = ", ".join(f"{k}: {v}" for k, v in match.items())
    return (f"title: base {rule_id}\nid: {rule_id}\n" + (f"name: {name}\n" if name else "") +
            f"logsource: {{product: linux, service: auth}}\ndetection: {{sel: {{{sel}}}, condition: sel}}\n")


FAILED = base("5638f7c0-ac70-491d-8465-2a65075e0d86", kind="failed")


def spec_doc(name: str) -> str:
    return (SPEC / name).read_text(encoding="utf-8")


def run(det: Detector, events: list[dict[str, object]]) -> list[str]:
    return [a.kind for e in events for a in det.process(e)]


def test_spec_event_count_fires_at_the_threshold_once_per_burst() -> None:
    det = detector(FAILED, spec_doc("event_count.yml"))
    events = [generic(at(i), f"e{i}", kind="failed", ComputerName="pc1") for i in range(150)]
    alerts = [a for e in events for a in det.process(e)]
    assert [(a.rule_title, a.count, a.group) for a in alerts] == [("Many failed logins", 100,
                                                                  (("ComputerName", "pc1"),))]


def test_spec_event_count_ecs_groups_by_a_dotted_field() -> None:
    det = detector(FAILED, spec_doc("event_count_ecs.yml"))
    events = [generic(at(i), f"e{i}", kind="failed", dns={"question": {"name": "x.example"}}) for i in range(100)]
    assert run(det, events) == ["event_count"]


def test_spec_event_count_needs_the_events_within_the_timespan() -> None:
    det = detector(FAILED, spec_doc("event_count.yml"))
    events = [generic(at(i * 60), f"e{i}", kind="failed", ComputerName="pc1") for i in range(100)]  # 99 min
    assert run(det, events) == []


def test_spec_value_count_counts_distinct_values() -> None:
    det = detector(FAILED, spec_doc("value_count.yml"))
    same_user = [generic(at(i), f"s{i}", kind="failed", ComputerName="pc", WorkstationName="ws", User="bob")
                 for i in range(150)]
    assert run(det, same_user) == []
    users = [generic(at(200 + i), f"u{i}", kind="failed", ComputerName="pc", WorkstationName="ws", User=f"u{i}")
             for i in range(100)]
    assert run(det, users) == ["value_count"]


RECON = [base("recon_cmd_a", "recon_cmd_a", cmd="a"), base("recon_cmd_b", "recon_cmd_b", cmd="b"),
         base("recon_cmd_c", "recon_cmd_c", cmd="c")]


def recon(cmds: str, step: int = 10, user: str = "u") -> list[dict[str, object]]:
    return [generic(at(i * step), f"{c}{i}", cmd=c, ComputerName="pc", User=user) for i, c in enumerate(cmds)]


def test_spec_temporal_any_order_within_timespan() -> None:
    assert run(detector(*RECON, spec_doc("temporal.yml")), recon("cba")) == ["temporal"]
    assert run(detector(*RECON, spec_doc("temporal.yml")), recon("ab")) == []
    assert run(detector(*RECON, spec_doc("temporal.yml")), recon("abc", step=200)) == []  # 400 s > 5m


def test_spec_temporal_ordered_needs_the_order() -> None:
    assert run(detector(*RECON, spec_doc("temporal_ordered.yml")), recon("abc")) == ["temporal_ordered"]
    assert run(detector(*RECON, spec_doc("temporal_ordered.yml")), recon("cba")) == []
    assert run(detector(*RECON, spec_doc("temporal_ordered.yml")), recon("xaybzc".replace("x", "c")
                                                                         .replace("y", "c").replace("z", "a"))) \
        == ["temporal_ordered"]


def test_group_by_separates_groups() -> None:
    det = detector(*RECON, spec_doc("temporal.yml"))
    events = recon("ab", user="u1") + recon("c", user="u2")
    assert run(det, events) == []


def test_spec_value_sum_and_avg() -> None:
    site = base("website_access", "website_access", kind="web")
    det = detector(site, spec_doc("value_sum.yml"))
    events = [generic(at(i), f"w{i}", kind="web", SourceIP="10.0.0.1", User="u", bytes_sent=400_000)
              for i in range(3)]
    assert run(det, events) == ["value_sum"]
    det = detector(base("rule_a_id", kind="net"), spec_doc("value_avg.yml"))
    assert run(det, [generic(at(0), "n", kind="net", SourceIP="1", User="u", BytesOut=501)]) == ["value_avg"]


def test_value_percentile_is_refused_by_name() -> None:
    with pytest.raises(RuleError, match=r"test1.yml: rule 'A computer.*correlation type 'value_percentile'"):
        detector(base("process_creation", kind="p"), spec_doc("value_percentile.yml"))


def test_spec_filter_document_removes_its_matches_from_the_rules_it_names() -> None:
    rules = [base("6f3e2987-db24-4c78-a860-b4f4095a7095", kind="rar"),
             base("df0841c0-9846-4e9f-ad8a-7df91571771b", kind="jump")]
    flt = spec_doc("filter_1.yml").replace("category: process_creation\n    product: windows",
                                           "product: linux\n    service: auth")
    det = detector(*rules, flt)
    assert run(det, [generic(at(0), "1", kind="rar", User="adm_bob")]) == []
    assert run(det, [generic(at(1), "2", kind="rar", User="bob")]) == ["match"]


def test_unknown_rule_reference_is_refused() -> None:
    with pytest.raises(RuleError, match="references rule '5638f7c0"):
        detector(spec_doc("event_count.yml"))


def test_upper_bound_conditions_are_judged_when_the_window_closes() -> None:
    few = """
    title: few
    id: few
    correlation: {type: event_count, rules: [b], group-by: [h], timespan: 1m, condition: {lt: 3}}
    """
    det = detector(base("b", kind="x"), few, limits=Limits(max_lateness_s=0))
    assert run(det, [generic(at(0), "1", kind="x", h="a"), generic(at(10), "2", kind="x", h="a")]) == []
    assert run(det, [generic(at(200), "3", kind="y", h="a"), generic(at(201), "4", kind="x", h="b")]) == ["event_count"]


def test_chaining_and_aliases() -> None:
    chain = """
    title: login burst
    id: burst
    name: burst
    correlation: {type: event_count, rules: [fail], group-by: [ip], timespan: 5m, condition: {gte: 2}}
    ---
    title: burst then success
    id: chain
    correlation:
        type: temporal_ordered
        rules: [burst, ok]
        group-by: [ip]
        aliases:
            ip: {burst: ip, ok: source.address}
        timespan: 10m
    """
    det = detector(base("fail", "fail", kind="f"), base("ok", "ok", kind="s"), chain)
    events = [generic(at(0), "f1", kind="f", ip="1.2.3.4"), generic(at(5), "f2", kind="f", ip="1.2.3.4"),
              generic(at(9), "s1", kind="s", source={"address": "1.2.3.4"})]
    alerts = [a for e in events for a in det.process(e)]
    assert [(a.rule_id, a.event_ids) for a in alerts] == [("chain", ("f1", "f2", "s1"))]  # burst itself not emitted


def test_late_events_within_the_bound_count_and_older_ones_are_dropped_and_counted() -> None:
    three = """
    title: three
    id: three
    correlation: {type: event_count, rules: [b], group-by: [h], timespan: 1m, condition: {gte: 3}}
    """
    det = detector(base("b", kind="x"), three, limits=Limits(max_lateness_s=30))
    assert run(det, [generic(at(100), "1", kind="x", h="a"), generic(at(110), "2", kind="x", h="a"),
                     generic(at(90), "3", kind="x", h="a")]) == ["event_count"]  # 20 s late: accepted
    assert run(det, [generic(at(10), "4", kind="x", h="a")]) == []  # 100 s late: dropped
    assert det.stats()["late_dropped"] == 1


def test_state_is_bounded_by_max_groups_and_ttl() -> None:
    two = """
    title: two
    id: two
    correlation: {type: event_count, rules: [b], group-by: [h], timespan: 1m, condition: {gte: 2}}
    """
    det = detector(base("b", kind="x"), two, limits=Limits(max_lateness_s=0, max_groups=3))
    run(det, [generic(at(i), str(i), kind="x", h=f"g{i}") for i in range(5)])
    assert det.stats()["correlation_groups"] == 3 and det.stats()["evicted_groups"] == 2
    run(det, [generic(at(1000), "late", kind="x", h="new")])  # the others idled past their TTL
    assert det.stats()["correlation_groups"] == 1


def test_snapshot_restores_windows_and_dedup_across_a_restart() -> None:
    texts = (FAILED, spec_doc("event_count.yml"))
    events = [generic(at(i), f"e{i}", kind="failed", ComputerName="pc1") for i in range(100)]
    first = detector(*texts)
    assert run(first, events[:60]) == []
    blob = first.snapshot()
    json.loads(blob)  # plain JSON, versioned
    second = detector(*texts)
    second.restore(blob)
    assert run(second, events[60:]) == ["event_count"]
    third = detector(*texts)
    third.restore(second.snapshot())
    assert run(third, events[:1]) == []  # nothing re-fires
    with pytest.raises(ValueError, match="version"):
        third.restore(b'{"version": 99}')


def test_the_same_firing_is_emitted_once() -> None:
    det = detector(base("b", kind="x"))
    event = generic(at(0), "same-id", kind="x")
    assert run(det, [event, event]) == ["match"]
    assert det.stats()["duplicates_suppressed"] == 1
