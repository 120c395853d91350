"""Anomaly baselines, as specifications: silent while learning, then each surprise once, explained."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import agent.detect
from agent.detect.alert import Alert
from agent.detect.baseline import AnomalyDetector, BaselineConfig, BaselineState
from agent.errors import ConfigError

from .helpers import auth, k8s

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def ts(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(T0 + seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kube(verb: str, resource: str, user: str, at: float, eid: str, ip: str | None = None,
         agent: str | None = None) -> dict[str, Any]:
    """A normalized Kubernetes audit event, with `source.ip` and `user_agent.original` as the normalizer sets them."""
    event = k8s(verb, resource, user=user, ts=ts(at), eid=eid)
    if ip:
        event["source"] = {"ip": ip}
    if agent:
        event["user_agent"] = {"original": agent}
    return event


def learned(config: BaselineConfig, events: list[dict[str, Any]]) -> AnomalyDetector:
    det = AnomalyDetector(config)
    for event in events:
        assert det.process(event) == [], f"alert while learning from {event}"
    return det


QUICK = BaselineConfig(warmup_events=20, warmup_minutes=10, entity_warmup_events=5, rate_spikes=False)


def habits(minutes: int = 12) -> list[dict[str, Any]]:
    """alice reads pods and lists configmaps from one address, once a minute for `minutes` minutes."""
    out = []
    for m in range(minutes):
        for verb, res in (("get", "pods"), ("list", "configmaps")):
            out.append(kube(verb, res, "alice", m * 60, f"h{m}{verb}", "10.0.0.5", "kubectl/1.31"))
    return out


def test_nothing_alerts_during_warm_up_even_when_everything_is_new() -> None:
    det = AnomalyDetector(QUICK)
    # 25 events but only 8 minutes: still warming up
    events = [kube(f"verb{i}", f"res{i}", f"u{i % 3}", i * 20, f"e{i}", f"10.0.0.{i}") for i in range(25)]
    assert [a for e in events for a in det.process(e)] == []
    assert not det.warm


def test_a_new_combination_after_warm_up_alerts_once_and_says_what_was_expected() -> None:
    det = learned(QUICK, habits())
    first = det.process(kube("delete", "secrets", "alice", 800, "x1", "10.0.0.5", "kubectl/1.31"))
    again = det.process(kube("delete", "secrets", "alice", 801, "x2", "10.0.0.5", "kubectl/1.31"))
    assert [a.rule_id for a in first] == ["logseal-baseline-new-k8s-combination"] and again == []
    alert = first[0]
    assert alert.kind == "anomaly" and alert.event_ids == ("x1",) and alert.group == (("user.name", "alice"),)
    assert alert.anomaly is not None
    assert alert.anomaly.observed == "delete secrets"
    assert "2 known value(s) for user.name=alice over 24 events" in alert.anomaly.expected
    assert "list configmaps" in alert.anomaly.expected and "get pods" in alert.anomaly.expected
    assert alert.anomaly.score == pytest.approx(100 * (1 - 3 / 26), abs=0.1)  # p(new) = (2+1)/(24+2)
    assert alert.level == "medium"  # LEVEL_BY_SCORE: 60 <= 88.5 < 90
    doc = alert.to_dict()
    assert doc["anomaly"]["expected"] == alert.anomaly.expected and doc["anomaly"]["score"] == alert.anomaly.score
    assert doc["rule"]["author"] == "logseal" and doc["rule"]["license"] == "Apache-2.0"
    assert Alert.from_dict(doc) == alert


def test_a_user_from_a_new_address_or_client_alerts_but_a_brand_new_user_only_teaches() -> None:
    det = learned(QUICK, habits())
    seen = det.process(kube("get", "pods", "alice", 800, "y1", "198.51.100.9", "curl/8.5"))
    assert sorted((a.rule_id, a.anomaly.observed if a.anomaly else "") for a in seen) == [
        ("logseal-baseline-new-source-ip", "198.51.100.9"), ("logseal-baseline-new-user-agent", "curl/8.5")]
    assert all("T1078" in a.to_dict()["threat"]["technique"]["id"] for a in seen)
    newcomer = [a for i in range(4) for a in det.process(
        kube("get", f"r{i}", "bob", 810 + i, f"b{i}", f"192.0.2.{i}"))]
    assert newcomer == []  # fewer than entity_warmup_events of bob's own history


def test_a_rate_spike_alerts_once_the_minute_is_over_with_expected_and_observed() -> None:
    cfg = BaselineConfig(warmup_events=10, warmup_minutes=10, k=3.0, min_excess=5.0, new_combinations=False,
                         new_sources=False)
    det = AnomalyDetector(cfg)
    steady = [auth("ssh_login", "success", ts(m * 60 + s * 10), f"s{m}-{s}", user="ops", host="node-1")
              for m in range(15) for s in range(4 + m % 2)]  # 4 or 5 events a minute
    assert [a for e in steady for a in det.process(e)] == []
    burst = [auth("ssh_login", "failure", ts(15 * 60 + i * 0.5), f"burst{i}", user="ops", host="node-1")
             for i in range(60)]
    during = [a for e in burst for a in det.process(e)]
    assert during == []  # the minute is not over: its count is not final
    after = det.process(auth("ssh_login", "success", ts(16 * 60 + 5), "later", user="ops", host="node-1"))
    assert sorted(a.rule_id for a in after) == ["logseal-baseline-node-rate-spike", "logseal-baseline-user-rate-spike"]
    node = next(a for a in after if a.group == (("host.name", "node-1"),))
    assert node.anomaly is not None and node.count == 60
    assert node.anomaly.observed == f"60 events in the minute from {ts(900)[:19]}Z"
    mean = dict(node.anomaly.baseline)["mean"]
    assert 4 < mean < 5 and node.anomaly.expected.startswith("at most ")
    assert node.first_time == "2026-01-01T00:15:00Z" and node.last_time == "2026-01-01T00:16:00Z"
    assert node.event_ids[0].startswith("burst") and node.level == "high"
    more = [a for i in range(3) for a in det.process(auth("x", "success", ts(16 * 60 + 10 + i), f"m{i}",
                                                          user="ops", host="node-1"))]
    assert more == []  # judged once


def test_a_steady_rate_never_alerts() -> None:
    cfg = BaselineConfig(warmup_events=10, warmup_minutes=5, new_combinations=False, new_sources=False)
    det = AnomalyDetector(cfg)
    events = [auth("x", "success", ts(m * 60 + s), f"e{m}-{s}", host="n") for m in range(120) for s in range(30)]
    assert [a for e in events for a in det.process(e)] == []


def test_new_terms_on_configured_fields() -> None:
    cfg = BaselineConfig(warmup_events=5, warmup_minutes=1, entity_warmup_events=0, new_combinations=False,
                         new_sources=False, rate_spikes=False, new_terms=(("process.name", "host.name"),))
    det = learned(cfg, [auth("x", "success", ts(i * 30), f"e{i}", process="sshd", host="n1") for i in range(6)])
    alerts = det.process(auth("x", "success", ts(400), "odd", process="nc", host="n1"))
    assert [(a.rule_id, a.group) for a in alerts] == [
        ("logseal-baseline-new-terms-process.name+host.name", (("process.name", "nc"), ("host.name", "n1")))]
    assert det.process(auth("x", "success", ts(401), "odd2", process="nc", host="n1")) == []


def test_state_survives_snapshot_and_restore() -> None:
    det = learned(QUICK, habits())
    blob = det.snapshot()
    again = AnomalyDetector(QUICK)
    again.restore(blob)
    assert again.snapshot() == blob and again.warm
    event = kube("get", "pods", "alice", 800, "z", "10.0.0.5", "kubectl/1.31")
    assert again.process(event) == [] == det.process(event)  # still knows alice's habits
    novel = kube("patch", "nodes", "alice", 801, "z2")
    assert [a.alert_id for a in again.process(novel)] == [a.alert_id for a in det.process(novel)]


def test_a_spike_still_open_at_snapshot_is_judged_after_restore() -> None:
    cfg = BaselineConfig(warmup_events=5, warmup_minutes=3, min_excess=5.0, new_combinations=False,
                         new_sources=False)
    det = learned(cfg, [auth("x", "success", ts(m * 60), f"e{m}", host="n", user="u") for m in range(6)])
    for i in range(30):
        det.process(auth("x", "success", ts(360 + i), f"b{i}", host="n", user="u"))
    restored = AnomalyDetector(cfg)
    restored.restore(det.snapshot())
    alerts = restored.process(auth("x", "success", ts(430), "next", host="n", user="u"))
    assert {a.count for a in alerts} == {30} and len(alerts) == 2


def test_restore_refuses_what_is_not_a_state() -> None:
    det = AnomalyDetector()
    for blob in (b"not json", b'{"version": 99}', b'{"version": 1}'):
        with pytest.raises(ValueError):
            det.restore(blob)


def test_state_is_capped_by_entities_values_and_age() -> None:
    cfg = BaselineConfig(warmup_events=0, warmup_minutes=0, max_entities=10, max_values=3, ttl_s=3600,
                         new_combinations=False, rate_spikes=True)
    det = AnomalyDetector(cfg)
    for i in range(50):
        det.process(auth("x", "success", ts(i), f"e{i}", user=f"user{i}", ip=f"192.0.2.{i}", host="n"))
    for i in range(10):
        det.process(auth("x", "success", ts(100 + i), f"v{i}", user="user49", ip=f"198.51.100.{i}", host="n"))
    assert len(det.state.seen) <= 10 and len(det.state.rates) <= 10
    assert all(len(s.values) <= 3 for s in det.state.seen.values())
    assert det.counters["entities_evicted"] > 0 and det.counters["values_evicted"] > 0
    det.process(auth("x", "success", ts(100_000), "late", user="fresh", ip="203.0.113.1", host="m"))
    assert {k.split("\x1f")[1] for k in det.state.seen} == {"fresh"}
    assert det.counters["entities_expired"] > 0
    assert BaselineState.from_json(det.snapshot()).to_json() == det.snapshot()


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="ewma_alpha"):
        BaselineConfig(ewma_alpha=0)
    with pytest.raises(ConfigError, match="new_terms"):
        BaselineConfig(new_terms=((),))


def test_the_baseline_module_does_no_io() -> None:
    path = Path(agent.detect.__file__).parent / "baseline.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"os", "socket", "asyncio", "grpc", "pathlib", "time", "subprocess", "threading"}
