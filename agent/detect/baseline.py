"""Anomaly baselines: explainable, streaming, per entity. Pure: no I/O, no clock (time is the events' own).

    detector = AnomalyDetector(BaselineConfig(warmup_minutes=60))
    alerts = detector.process(event)        # per event, in arrival order
    blob = detector.snapshot()              # bytes (versioned JSON); AnomalyDetector.restore(blob) takes it back

Baselines (each can be switched off in `BaselineConfig`):

- `new_combination`: a Kubernetes audit (verb, resource[/subresource]) the user never used.
- `new_source_ip`, `new_user_agent`: a user seen from an address, or with a client, it never used.
- `rate_spike`: events per minute per node (`host.name`) and per user (`user.name`) against an EWMA
  mean and deviation (`ewma_alpha`); a minute whose count exceeds mean + max(k·σ, `min_excess`)
  alerts once that minute is over (when event time moves past it), so the alert carries the whole
  minute's count.
- `new_terms`: first-seen values of configured field combinations, over all events (Elastic's
  `new_terms`).

Every alert says what was expected and what was observed (`anomaly.expected`, `anomaly.observed`)
with a score from 0 to 100, and its level follows from the score (`LEVEL_BY_SCORE`). For a first-seen
value the score is 100·(1 − p), p = (distinct values + 1) / (events + 2) being the estimated
chance that the entity's next value is new: a user with 5 habits over 1000 events scores 99, one
whose every event is new scores near 0. For a rate, 50·excess/allowed-excess: 50 at the threshold,
100 at twice the allowed excess.

Invariants:
- Learning never stops: every event updates the baselines it feeds, whether it alerted or not.
- Nothing alerts during warm-up: the detector must have seen `warmup_events` events spanning
  `warmup_minutes` of event time; an entity must have `entity_warmup_events` events (first-seen)
  or `warmup_minutes` closed minutes (rates) of its own history.
- A first-seen value alerts once (it is learned in the same step); a rate alerts at most once per
  entity and minute.
- State is bounded: at most `max_entities` entities per kind (first-seen, rate; least recently seen
  evicted first), `max_values` values per entity, and what is not seen for `ttl_s` of event time is
  forgotten (a value forgotten by age is new again). Every eviction is counted in `counters`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from agent.detect.alert import Alert, Anomaly
from agent.detect.engine import event_id, event_time, materialize
from agent.detect.fields import Doc, path_getter, split_path
from agent.detect.values import Getter, text_of
from agent.errors import ConfigError

STATE_VERSION = 1
LEVEL_BY_SCORE = ((90.0, "high"), (60.0, "medium"), (30.0, "low"))
"""(lowest score, level), first match wins; below the last: informational. Anomalies are hints, never critical."""
ZERO_FOLD_CAP = 1440
"""Silent minutes folded into a rate baseline at most (a day); beyond it the mean is ~0 anyway."""
AUTHOR = "logseal"
LICENSE = "Apache-2.0"
RULESET = "logseal anomaly baselines"
SEP = "\x1f"
T = TypeVar("T")


@dataclass(frozen=True)
class BaselineRule:
    id: str
    title: str
    tags: tuple[str, ...] = ()


RULES = {
    "new_combination": BaselineRule("logseal-baseline-new-k8s-combination",
                                    "User Performs A Kubernetes Verb On A Resource For The First Time",
                                    ("attack.discovery", "attack.t1613")),
    "new_source_ip": BaselineRule("logseal-baseline-new-source-ip", "User Seen From A New Source Address",
                                  ("attack.initial_access", "attack.t1078")),
    "new_user_agent": BaselineRule("logseal-baseline-new-user-agent", "User Seen With A New User Agent",
                                   ("attack.initial_access", "attack.t1078")),
    "rate_spike_node": BaselineRule("logseal-baseline-node-rate-spike", "Event Rate Spike On A Node"),
    "rate_spike_user": BaselineRule("logseal-baseline-user-rate-spike", "Event Rate Spike Of A User"),
}


@dataclass(frozen=True)
class BaselineConfig:
    """Which baselines run and how they learn. Validated at construction (ConfigError names the field)."""

    warmup_events: int = 10_000
    """The detector stays silent until it has seen this many events ..."""
    warmup_minutes: int = 60
    """... spanning this many minutes of event time; also the closed minutes a rate needs per entity."""
    entity_warmup_events: int = 20
    """A first-seen baseline judges an entity only after this many of its events."""
    ewma_alpha: float = 0.1
    """Weight of the newest minute in the rate mean and variance (0 < alpha ≤ 1)."""
    k: float = 4.0
    """A minute is a spike when its count exceeds mean + k·σ ..."""
    min_excess: float = 20.0
    """... and mean + this many events (so a flat baseline with σ = 0 does not alert on one event)."""
    new_combinations: bool = True
    new_sources: bool = True
    """New source IP and new user agent per user."""
    rate_spikes: bool = True
    new_terms: tuple[tuple[str, ...], ...] = ()
    """Field combinations whose first-seen values alert, e.g. (("process.executable",), ("user.name", "host.name"))."""
    max_entities: int = 50_000
    """Entities remembered per kind (first-seen, rates); the least recently seen is evicted first."""
    max_values: int = 1_000
    """Values remembered per entity and baseline; the least recently seen is evicted first."""
    ttl_s: float = 30 * 86_400.0
    """Entities and values not seen for this long (event time) are forgotten."""

    def __post_init__(self) -> None:
        checks = (("warmup_events", self.warmup_events >= 0), ("warmup_minutes", self.warmup_minutes >= 0),
                  ("entity_warmup_events", self.entity_warmup_events >= 0),
                  ("ewma_alpha", 0 < self.ewma_alpha <= 1), ("k", self.k > 0), ("min_excess", self.min_excess >= 0),
                  ("max_entities", self.max_entities >= 1), ("max_values", self.max_values >= 1),
                  ("ttl_s", self.ttl_s > 0),
                  ("new_terms", all(isinstance(t, tuple) and t and all(isinstance(f, str) and f for f in t)
                                    for t in self.new_terms)))
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"baselines.{name}: invalid value {getattr(self, name)!r}")


@dataclass
class Seen:
    """First-seen memory of one entity in one baseline."""

    events: int
    last: float
    values: OrderedDict[str, float] = field(default_factory=OrderedDict)  # value -> last seen, oldest first


@dataclass
class Rate:
    """Per-minute count of one entity and its EWMA baseline."""

    minute: int
    count: int = 0
    mean: float = 0.0
    var: float = 0.0
    buckets: int = 0
    last: float = 0.0

    def fold(self, x: float, alpha: float) -> None:
        if self.buckets == 0:  # the first minute is the first estimate (no bias towards zero)
            self.mean, self.var, self.buckets = x, 0.0, 1
            return
        diff = x - self.mean
        incr = alpha * diff
        self.mean += incr
        self.var = (1 - alpha) * (self.var + diff * incr)
        self.buckets += 1


@dataclass
class Spike:
    """A minute that crossed its threshold, judged when it is over."""

    minute: int
    event_id: str
    node: str
    mean: float
    sigma: float
    threshold: float


@dataclass
class BaselineState:
    events: int = 0
    first_time: float | None = None
    clock: float = 0.0
    seen: OrderedDict[str, Seen] = field(default_factory=OrderedDict)
    rates: OrderedDict[str, Rate] = field(default_factory=OrderedDict)
    spikes: dict[str, Spike] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        obj = {"version": STATE_VERSION, "events": self.events, "first_time": self.first_time, "clock": self.clock,
               "seen": [[k, s.events, s.last, [[v, t] for v, t in s.values.items()]] for k, s in self.seen.items()],
               "rates": [[k, r.minute, r.count, r.mean, r.var, r.buckets, r.last] for k, r in self.rates.items()],
               "spikes": {k: [s.minute, s.event_id, s.node, s.mean, s.sigma, s.threshold]
                          for k, s in self.spikes.items()},
               "counters": self.counters}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> BaselineState:
        """ValueError when the blob is not a baseline state of this version."""
        try:
            obj: Any = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"baseline state is not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
            found = obj.get("version") if isinstance(obj, dict) else None
            raise ValueError(f"baseline state version {found!r}, expected {STATE_VERSION}")
        try:
            first = obj["first_time"]
            return cls(
                int(obj["events"]), None if first is None else float(first), float(obj["clock"]),
                OrderedDict((str(k), Seen(int(n), float(last), OrderedDict((str(v), float(t)) for v, t in vals)))
                            for k, n, last, vals in obj["seen"]),
                OrderedDict((str(k), Rate(int(m), int(c), float(mean), float(var), int(b), float(last)))
                            for k, m, c, mean, var, b, last in obj["rates"]),
                {str(k): Spike(int(m), str(e), str(n), float(mu), float(sd), float(th))
                 for k, (m, e, n, mu, sd, th) in obj["spikes"].items()},
                {str(k): int(v) for k, v in obj["counters"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"baseline state is malformed: {exc!r}") from None


def level_of(score: float) -> str:
    return next((level for floor, level in LEVEL_BY_SCORE if score >= floor), "informational")


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_GETTERS: dict[str, Getter] = {}


def _first_text(event: Doc, name: str) -> str | None:
    getter = _GETTERS.get(name)
    if getter is None:  # one unrolled getter per field name: the baselines' fields and configured new_terms
        getter = _GETTERS[name] = path_getter(split_path(name))
    for value in getter(event):
        text = text_of(value)
        if text:
            return text
    return None


@dataclass(frozen=True)
class _Observation:
    baseline: str  # key in RULES, or "new_terms:<fields>"
    entity_field: str  # "" for baselines over all events
    entity: str
    value: str
    fields: tuple[tuple[str, str], ...]  # what was observed, by field


class AnomalyDetector:
    def __init__(self, config: BaselineConfig | None = None, state: BaselineState | None = None) -> None:
        self.config = config or BaselineConfig()
        self.state = state or BaselineState()

    # -- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return self.state.to_json()

    def restore(self, blob: bytes) -> None:
        """Take back a `snapshot()` (caps of the current config applied). ValueError if unreadable."""
        self.state = BaselineState.from_json(blob)
        self._evict(self.state.clock)

    @property
    def counters(self) -> dict[str, int]:
        return self.state.counters

    def _count(self, name: str, n: int = 1) -> None:
        self.state.counters[name] = self.state.counters.get(name, 0) + n

    # -- running ---------------------------------------------------------------------------------

    @property
    def warm(self) -> bool:
        st, cfg = self.state, self.config
        return (st.events >= cfg.warmup_events and st.first_time is not None
                and st.clock - st.first_time >= cfg.warmup_minutes * 60)

    def process(self, event: Doc) -> list[Alert]:
        """The anomalies `event` shows (it is learned either way)."""
        event = materialize(event)
        st = self.state
        t = event_time(event)
        if t is None:
            self._count("events_without_time")
        else:
            st.clock = max(st.clock, t)
            if st.first_time is None:
                st.first_time = t
        st.events += 1
        now = st.clock if t is None else t
        warm = self.warm
        eid = event_id(event)
        node = _first_text(event, "host.name") or ""
        out: list[Alert] = []
        if t is not None:
            out.extend(self._judge_spikes(int(st.clock // 60)))
        for obs in self._observations(event):
            alert = self._first_seen(obs, now, warm, eid, node, str(event.get("@timestamp") or iso(now)))
            if alert is not None:
                out.append(alert)
        if self.config.rate_spikes and t is not None:
            for kind, entity_field in (("rate_spike_node", "host.name"), ("rate_spike_user", "user.name")):
                entity = _first_text(event, entity_field)
                if entity is not None:
                    out.extend(self._rate(kind, entity_field, entity, t, warm, eid, node))
        self._evict(st.clock)
        self._count("alerts", len(out))
        return out

    def _observations(self, event: Doc) -> Iterator[_Observation]:
        cfg = self.config
        user = _first_text(event, "user.name")
        dataset = _first_text(event, "event.dataset")
        if cfg.new_combinations and dataset == "kubernetes.audit":
            k_user = _first_text(event, "kubernetes.audit.user.username") or user
            verb = _first_text(event, "kubernetes.audit.verb")
            resource = _first_text(event, "kubernetes.audit.objectRef.resource")
            if k_user and verb and resource:
                sub = _first_text(event, "kubernetes.audit.objectRef.subresource")
                resource = f"{resource}/{sub}" if sub else resource
                yield _Observation("new_combination", "user.name", k_user, f"{verb} {resource}",
                                   (("kubernetes.audit.verb", verb), ("kubernetes.audit.objectRef.resource", resource)))
        if cfg.new_sources and user:
            for kind, name in (("new_source_ip", "source.ip"), ("new_user_agent", "user_agent.original")):
                value = _first_text(event, name)
                if value:
                    yield _Observation(kind, "user.name", user, value, ((name, value),))
        for fields in cfg.new_terms:
            values = [_first_text(event, f) for f in fields]
            if all(v is not None for v in values):
                pairs = tuple((f, str(v)) for f, v in zip(fields, values, strict=True))
                yield _Observation("new_terms:" + "+".join(fields), "", "",
                                   json.dumps([v for _, v in pairs], ensure_ascii=False), pairs)

    def _first_seen(self, obs: _Observation, now: float, warm: bool, eid: str, node: str, when: str) -> Alert | None:
        cfg = self.config
        key = obs.baseline + SEP + obs.entity
        seen = self.state.seen.get(key)
        if seen is None:
            seen = self.state.seen[key] = Seen(0, now)
        else:
            self.state.seen.move_to_end(key)
        horizon = now - cfg.ttl_s
        while seen.values:
            oldest, seen_at = next(iter(seen.values.items()))
            if seen_at >= horizon:
                break
            del seen.values[oldest]
            self._count("values_expired")
        last = seen.values.get(obs.value)
        known = last is not None
        alert = None
        if not known and warm and seen.events >= cfg.entity_warmup_events:
            alert = self._first_seen_alert(obs, seen, eid, node, when)
        seen.events += 1
        seen.last = max(seen.last, now)
        seen.values[obs.value] = max(now, last or now)
        seen.values.move_to_end(obs.value)
        while len(seen.values) > cfg.max_values:
            seen.values.popitem(last=False)
            self._count("values_evicted")
        return alert

    def _first_seen_alert(self, obs: _Observation, seen: Seen, eid: str, node: str, when: str) -> Alert:
        distinct = len(seen.values)
        p_new = (distinct + 1) / (seen.events + 2)
        score = round(100 * (1 - p_new), 1)
        recent = list(reversed(seen.values))[:5]
        who = f"{obs.entity_field}={obs.entity}" if obs.entity_field else "all events"
        expected = (f"one of {distinct} known value(s) for {who} over {seen.events} events"
                    + (f" (latest: {', '.join(recent)})" if recent else ""))
        if obs.baseline.startswith("new_terms:"):
            fields = obs.baseline.removeprefix("new_terms:")
            rule = BaselineRule(f"logseal-baseline-new-terms-{fields}", f"New Value Of {fields}")
            group = obs.fields
            kind = "new_terms"
        else:
            rule = RULES[obs.baseline]
            group = ((obs.entity_field, obs.entity),)
            kind = obs.baseline
        anomaly = Anomaly(kind, who, expected, obs.value, score,
                          (("known_values", distinct), ("entity_events", seen.events), ("p_new", round(p_new, 4)),
                           ("examples", tuple(recent))))
        return Alert(rule.id, rule.title, level_of(score), AUTHOR, LICENSE, RULESET, rule.tags, "anomaly", (eid,),
                     group, when, when, 1, (node,) if node else (),
                     tuple((f, (v,)) for f, v in obs.fields), f"value:{obs.value}", anomaly)

    def _rate(self, kind: str, entity_field: str, entity: str, t: float, warm: bool, eid: str,
              node: str) -> list[Alert]:
        cfg = self.config
        key = kind + SEP + entity
        minute = int(t // 60)
        rate = self.state.rates.get(key)
        out: list[Alert] = []
        if rate is None:
            rate = self.state.rates[key] = Rate(minute, last=t)
        else:
            self.state.rates.move_to_end(key)
        if minute > rate.minute:
            spike = self.state.spikes.pop(key, None)
            if spike is not None and spike.minute == rate.minute:
                out.append(self._spike_alert(key, spike, rate.count))
            rate.fold(rate.count, cfg.ewma_alpha)
            for _ in range(min(minute - rate.minute - 1, ZERO_FOLD_CAP)):
                if rate.mean < 1e-9 and rate.var < 1e-9:
                    rate.buckets += minute - rate.minute - 1  # the rest of the silent minutes change nothing
                    break
                rate.fold(0.0, cfg.ewma_alpha)
            rate.minute, rate.count = minute, 0
        rate.count += 1  # a late event (older minute) counts in the current one
        rate.last = max(rate.last, t)
        if warm and rate.buckets >= cfg.warmup_minutes and key not in self.state.spikes:
            sigma = math.sqrt(max(rate.var, 0.0))
            threshold = rate.mean + max(cfg.k * sigma, cfg.min_excess)
            if rate.count > threshold:
                self.state.spikes[key] = Spike(rate.minute, eid, node, rate.mean, sigma, threshold)
        return out

    def _judge_spikes(self, minute: int) -> list[Alert]:
        """Spikes of minutes that are over: their counts are final."""
        out: list[Alert] = []
        if not self.state.spikes:
            return out
        for key, spike in list(self.state.spikes.items()):
            if spike.minute < minute:
                del self.state.spikes[key]
                rate = self.state.rates.get(key)
                if rate is not None and rate.minute == spike.minute:
                    out.append(self._spike_alert(key, spike, rate.count))
        return out

    def _spike_alert(self, key: str, spike: Spike, observed: int) -> Alert:
        cfg = self.config
        kind, entity = key.split(SEP, 1)
        entity_field = "host.name" if kind == "rate_spike_node" else "user.name"
        allowed = max(spike.threshold - spike.mean, 1e-9)
        score = round(min(100.0, 50.0 * (observed - spike.mean) / allowed), 1)
        rule = RULES[kind]
        start, end = iso(spike.minute * 60), iso(spike.minute * 60 + 60)
        who = f"{entity_field}={entity}"
        anomaly = Anomaly("rate_spike", who,
                          f"at most {spike.threshold:.1f} events/min (mean {spike.mean:.1f}, sigma {spike.sigma:.1f},"
                          f" k {cfg.k:g})", f"{observed} events in the minute from {start}", score,
                          (("mean", round(spike.mean, 3)), ("sigma", round(spike.sigma, 3)),
                           ("threshold", round(spike.threshold, 3)), ("observed", observed)))
        self._count("rate_spikes")
        return Alert(rule.id, rule.title, level_of(score), AUTHOR, LICENSE, RULESET, rule.tags, "anomaly",
                     (spike.event_id,), ((entity_field, entity),), start, end, observed,
                     (spike.node,) if spike.node else (), (), f"minute:{spike.minute}", anomaly)

    def _evict(self, now: float) -> None:
        st = self.state
        for key in _evict_from(st.seen, now - self.config.ttl_s, self.config.max_entities, self._count, "entities"):
            st.spikes.pop(key, None)
        for key in _evict_from(st.rates, now - self.config.ttl_s, self.config.max_entities, self._count, "rates"):
            st.spikes.pop(key, None)


class _HasLast(Protocol):
    last: float


def _evict_from(table: OrderedDict[str, T], horizon: float, cap: int, count: Callable[[str], None],
                what: str) -> list[str]:
    """Keys dropped from the front of `table` (least recently seen first): over the cap, or older than horizon."""
    dropped = []
    while table:
        key, item = next(iter(table.items()))
        if len(table) > cap:
            count(f"{what}_evicted")
        elif cast(_HasLast, item).last < horizon:
            count(f"{what}_expired")
        else:
            break
        del table[key]
        dropped.append(key)
    return dropped
