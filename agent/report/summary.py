"""The compliance report's pure core: events, alerts and a verification result in, a `Summary` out.

No I/O: `agent.report.collect` reads the store, the alerts file and the verification result and feeds
them to a `SummaryBuilder`; the renderers (`render_json`, `render_html`) only format a `Summary`.

Definitions (the README's "Compliance report" section says the same in words):

- An **authentication failure** is an event with `event.outcome` "failure" that is either in the
  `authentication` category (sshd, sudo, su, login, PAM, auditd USER_AUTH...; the kind is its
  `event.action`) or a Kubernetes API request answered 401 (`k8s-unauthenticated`) or 403 / denied
  by the authorizer (`k8s-forbidden`).
- A **privileged action** is an event that did not fail and is one of: a sudo or su use
  (`system.auth`); a program run with effective uid 0 by a non-root user, or a run of sudo, su,
  doas, pkexec or runuser (`auditd.log` executions: `privileged-exec`); a Kubernetes RBAC change
  (create, update, patch, delete, escalate or bind of roles, rolebindings, clusterroles,
  clusterrolebindings: `rbac-change`); `pods/exec` and `pods/attach` (`pod-exec`, `pod-attach`); the
  creation of a pod with a privileged container (`privileged-pod`, when the audit policy recorded
  the request body); a read of secrets (get, list, watch: `secret-read`); impersonation.
  A denied attempt is an authentication failure, not a privileged action.
- A **principal** is the event's `user.name` (the actor; a target user is not counted). In the
  failure and privileged-action lists an event without one (auditd) shows `uid=<user.id>`.
- **Gaps** are the gap records nodes sealed into their streams (`logseal.gap`) and batches whose
  payload a node dropped (spool full); both declare loss the node signed. Apart from them,
  **coverage** gives each node's longest silence: the longest time in the period without any batch
  from it (heartbeats included), which is time its activity is not in the trail.

Detail lists (failures, privileged actions, gaps...) keep the first `DETAIL_LIMIT` rows in time
order; their totals and breakdowns always count every event.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.detect.alert import level_rank

DETAIL_LIMIT = 200
TOP_PRINCIPALS = 10
MAX_BUCKETS = 60
BUCKET_CHOICES_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
"""Time-series bucket widths, smallest first; the report takes the first giving at most MAX_BUCKETS
(beyond them, the fewest whole days that do)."""

PRIVILEGE_PROGRAMS = frozenset({"sudo", "su", "doas", "pkexec", "runuser"})
RBAC_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
RBAC_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "escalate", "bind"})
SECRET_READ_VERBS = frozenset({"get", "list", "watch"})
POD_SHELL_SUBRESOURCES = frozenset({"exec", "attach"})
GAP_DATASET = "logseal.gap"
_NS = 1_000_000_000


def iso(ns: int) -> str:
    """RFC 3339 UTC, whole seconds (the report's only time format)."""
    return dt.datetime.fromtimestamp(ns // _NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_count(since_ns: int, until_ns: int, width_s: int) -> int:
    width = width_s * _NS
    return max(1, -(-(until_ns - since_ns // width * width) // width))


def bucket_seconds(since_ns: int, until_ns: int) -> int:
    """The smallest width giving at most MAX_BUCKETS buckets aligned to multiples of it (UTC)."""
    for width in BUCKET_CHOICES_S:
        if _bucket_count(since_ns, until_ns, width) <= MAX_BUCKETS:
            return width
    days = max(1, (until_ns - since_ns) // (MAX_BUCKETS * 86400 * _NS))  # longer periods: whole days
    while _bucket_count(since_ns, until_ns, days * 86400) > MAX_BUCKETS:
        days += 1
    return days * 86400


def _get(event: Mapping[str, Any], *path: str) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _category(event: Mapping[str, Any]) -> list[str]:
    value = _get(event, "event", "category")
    if isinstance(value, str):
        return [value]
    return [c for c in value if isinstance(c, str)] if isinstance(value, list) else []


def _k8s(event: Mapping[str, Any]) -> Mapping[str, Any]:
    audit = _get(event, "kubernetes", "audit")
    return audit if isinstance(audit, dict) else {}


def auth_failure_kind(event: Mapping[str, Any]) -> str | None:
    """The kind of authentication failure this event is, or None (see the module doc)."""
    if _get(event, "event", "outcome") != "failure":
        return None
    if _get(event, "event", "dataset") == "kubernetes.audit":
        audit = _k8s(event)
        code = _get(audit, "responseStatus", "code")
        if code == 401:
            return "k8s-unauthenticated"
        if code == 403 or _get(audit, "annotations", "authorization.k8s.io/decision") == "forbid":
            return "k8s-forbidden"
        return None
    if "authentication" in _category(event):
        return _text(_get(event, "event", "action")) or "authentication"
    return None


def _privileged_container(request: Any) -> bool:
    spec = _get(request, "spec") if isinstance(request, dict) else None
    if not isinstance(spec, dict):
        return False
    for key in ("containers", "initContainers", "ephemeralContainers"):
        containers = spec.get(key)
        if isinstance(containers, list) and any(
                _get(c, "securityContext", "privileged") is True for c in containers if isinstance(c, dict)):
            return True
    return False


def privileged_kind(event: Mapping[str, Any]) -> str | None:
    """The kind of privileged action this event is, or None (see the module doc)."""
    if _get(event, "event", "outcome") == "failure":
        return None
    dataset = _get(event, "event", "dataset")
    action = _get(event, "event", "action")
    if dataset == "system.auth" and action in ("sudo", "su"):
        return str(action)
    if dataset == "auditd.log" and action == "executed":
        name = _text(_get(event, "process", "name"))
        elevated = _get(event, "user", "effective", "id") == "0" and _get(event, "user", "id") not in ("0", None)
        return "privileged-exec" if name in PRIVILEGE_PROGRAMS or elevated else None
    if dataset != "kubernetes.audit":
        return None
    audit = _k8s(event)
    verb = _text(audit.get("verb"))
    resource = _text(_get(audit, "objectRef", "resource"))
    subresource = _text(_get(audit, "objectRef", "subresource"))
    group = _text(_get(audit, "objectRef", "apiGroup"))
    if verb == "impersonate":
        return "impersonation"
    if group == "rbac.authorization.k8s.io" and resource in RBAC_RESOURCES and verb in RBAC_WRITE_VERBS:
        return "rbac-change"
    if resource == "pods" and subresource in POD_SHELL_SUBRESOURCES:
        return f"pod-{subresource}"
    if resource == "pods" and not subresource and verb == "create" and _privileged_container(
            audit.get("requestObject")):
        return "privileged-pod"
    if resource == "secrets" and not subresource and verb in SECRET_READ_VERBS:
        return "secret-read"
    return None


def _detail(event: Mapping[str, Any]) -> str:
    """A short, human description of what the event did (log content: renderers must escape it)."""
    if _get(event, "event", "dataset") == "kubernetes.audit":
        audit = _k8s(event)
        ref = _get(audit, "objectRef")
        ref = ref if isinstance(ref, dict) else {}
        what = "/".join(x for x in (_text(ref.get("resource")), _text(ref.get("subresource"))) if x)
        where = "/".join(x for x in (_text(ref.get("namespace")), _text(ref.get("name"))) if x)
        code = _get(audit, "responseStatus", "code")
        return " ".join(x for x in (_text(audit.get("verb")), what, where, f"-> {code}" if code is not None else "")
                        if x)
    command = _text(_get(event, "process", "command_line"))
    if command:
        target = _text(_get(event, "user", "target", "name"))
        return f"{command} (as {target})" if target else command
    args = _get(event, "process", "args")
    if isinstance(args, list) and args:
        return " ".join(str(a) for a in args)
    target = _text(_get(event, "user", "target", "name"))
    if target:
        return f"to {target}"
    return _text(_get(event, "message"))[:200]


@dataclass(frozen=True)
class Window:
    """The report's period [since, until) and its time buckets (`make_window` derives them)."""

    since_ns: int
    until_ns: int
    bucket_s: int
    start_ns: int  # the first bucket's start: `since` rounded down to the bucket width (UTC)
    buckets: int

    def bucket_of(self, ts_ns: int) -> int:
        return min(self.buckets - 1, max(0, (ts_ns - self.start_ns) // (self.bucket_s * _NS)))

    def contains(self, ts_ns: int) -> bool:
        return self.since_ns <= ts_ns < self.until_ns


def make_window(since_ns: int, until_ns: int) -> Window:
    bucket_s = bucket_seconds(since_ns, until_ns)
    width = bucket_s * _NS
    return Window(since_ns, until_ns, bucket_s, since_ns // width * width, _bucket_count(since_ns, until_ns, bucket_s))


@dataclass(frozen=True)
class Item:
    """One event in a detail list: an authentication failure or a privileged action."""

    time: str
    node: str
    dataset: str
    kind: str
    user: str
    source_ip: str
    detail: str
    event_id: str


@dataclass(frozen=True)
class Series:
    name: str
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Breakdown:
    """Events of one class: the total, counts by kind, user, source address and node, and the first rows."""

    total: int
    by_kind: tuple[tuple[str, int], ...]
    by_user: tuple[tuple[str, int], ...]
    by_source: tuple[tuple[str, int], ...]
    by_node: tuple[tuple[str, int], ...]
    items: tuple[Item, ...]
    over_time: tuple[Series, ...]  # by kind, in the timeline's buckets


@dataclass(frozen=True)
class Timeline:
    bucket_s: int
    starts: tuple[str, ...]
    by_node: tuple[Series, ...]
    by_dataset: tuple[Series, ...]


@dataclass(frozen=True)
class NodeCoverage:
    """When a node's batches arrived in the period (heartbeats included): its longest silence is a coverage gap."""

    node: str
    batches: int
    first: str
    last: str
    longest_silence_s: int  # from the period's start, between batches, or until the period's end (or now)
    silence_from: str


@dataclass
class _Receipts:
    batches: int
    first: int
    last: int
    silence: int
    silence_from: int


@dataclass(frozen=True)
class Principal:
    name: str
    events: int
    auth_failures: int
    privileged: int
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Gap:
    time: str
    node: str
    kind: str  # "gap-record" or "dropped-batch"
    what: str  # the file or stream position named
    bytes: int | None
    reason: str


@dataclass(frozen=True)
class AlertRule:
    rule_id: str
    name: str
    level: str
    count: int
    last_time: str


@dataclass(frozen=True)
class Alerts:
    source: str | None  # the alerts file read, None when there was none
    note: str  # why there are no alerts, or ""
    total: int
    by_level: tuple[tuple[str, int], ...]
    by_rule: tuple[AlertRule, ...]
    unreadable_lines: int


@dataclass(frozen=True)
class ProblemRow:
    kind: str
    where: str
    batch: str
    detail: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    status: str  # "intact" or "problems found"
    batches: int
    events: int
    tree_size: int
    checkpoints: int
    witness_checkpoints: int
    declared_gaps: int
    problems: tuple[ProblemRow, ...]
    info: tuple[str, ...]


@dataclass(frozen=True)
class UnreadableBatch:
    node: str
    batch: str
    events: int
    reason: str


@dataclass(frozen=True)
class RetentionAction:
    time: str
    rule: str
    segment: str
    batches: str
    leaves: str
    bytes: int | None
    note: str
    signed: bool


@dataclass(frozen=True)
class Retention:
    present: bool  # the store has a retention table
    note: str
    actions: tuple[RetentionAction, ...]
    outside_window: int


@dataclass(frozen=True)
class Summary:
    store: str
    generated: str
    since: str
    until: str
    events: int
    nodes: tuple[str, ...]
    datasets: tuple[str, ...]
    by_node_dataset: tuple[tuple[str, str, int], ...]
    timeline: Timeline
    auth_failures: Breakdown
    privileged: Breakdown
    principals: tuple[Principal, ...]
    alerts: Alerts
    gaps: tuple[Gap, ...]
    gaps_total: int
    coverage: tuple[NodeCoverage, ...]
    rejections: tuple[tuple[str, int], ...]
    unreadable: tuple[UnreadableBatch, ...]
    verification: Verification
    retention: Retention


def verification_from(report: Any) -> Verification:
    """A `Verification` from `agent.aggregator.verify.Report` (duck-typed, to keep this module pure)."""
    problems = tuple(ProblemRow(p.kind, p.where, p.batch, p.detail) for p in report.problems)
    return Verification(bool(report.ok), "intact" if report.ok else "problems found", int(report.batches),
                        int(report.events), int(report.tree_size), int(report.checkpoints), int(report.witnessed),
                        len(report.gaps), problems, tuple(report.info))


def _ranked(counter: Counter[str], limit: int | None = None) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


@dataclass
class _Class:
    buckets: int
    total: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    by_node: Counter[str] = field(default_factory=Counter)
    items: list[tuple[int, Item]] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)

    def add(self, ts_ns: int, bucket: int, item: Item) -> None:
        self.total += 1
        self.series.setdefault(item.kind, [0] * self.buckets)[bucket] += 1
        self.by_kind[item.kind] += 1
        self.by_user[item.user or "(none)"] += 1
        self.by_node[item.node] += 1
        if item.source_ip:
            self.by_source[item.source_ip] += 1
        self.items.append((ts_ns, item))
        if len(self.items) > 2 * DETAIL_LIMIT:
            self._trim()

    def _trim(self) -> None:
        self.items.sort(key=lambda x: x[0])
        del self.items[DETAIL_LIMIT:]

    def build(self) -> Breakdown:
        self._trim()
        return Breakdown(self.total, _ranked(self.by_kind), _ranked(self.by_user, 50), _ranked(self.by_source, 50),
                         _ranked(self.by_node), tuple(item for _, item in self.items), _series_tuple(self.series))


class SummaryBuilder:
    """Accumulates one pass over the window's events (any order) and builds the `Summary`."""

    def __init__(self, store: str, window: Window, generated_ns: int) -> None:
        self.store = store
        self.window = window
        self.generated_ns = generated_ns
        self.events = 0
        self.by_node_dataset: Counter[tuple[str, str]] = Counter()
        self.node_series: dict[str, list[int]] = {}
        self.dataset_series: dict[str, list[int]] = {}
        self.failures = _Class(window.buckets)
        self.privileged = _Class(window.buckets)
        self.receipts: dict[str, _Receipts] = {}
        self.principal_events: Counter[str] = Counter()
        self.principal_failures: Counter[str] = Counter()
        self.principal_privileged: Counter[str] = Counter()
        self.principal_nodes: dict[str, set[str]] = {}
        self.gaps: list[tuple[int, Gap]] = []
        self.gaps_total = 0
        self.unreadable: list[UnreadableBatch] = []
        self.rejections: Counter[str] = Counter()
        self.alert_rules: dict[tuple[str, str, str], tuple[int, str]] = {}
        self.alert_levels: Counter[str] = Counter()
        self.alert_total = 0
        self.alert_unreadable = 0
        self._alert_ids: set[str] = set()

    def _series(self, table: dict[str, list[int]], name: str) -> list[int]:
        series = table.get(name)
        if series is None:
            series = table[name] = [0] * self.window.buckets
        return series

    def add_event(self, node: str, ts_ns: int, event: Mapping[str, Any]) -> None:
        """One stored event of `node` (the batch's signed node id) at `ts_ns` (its indexed time)."""
        dataset = _text(_get(event, "event", "dataset")) or "(none)"
        self.events += 1
        self.by_node_dataset[(node, dataset)] += 1
        bucket = self.window.bucket_of(ts_ns)
        self._series(self.node_series, node)[bucket] += 1
        self._series(self.dataset_series, dataset)[bucket] += 1
        user = _text(_get(event, "user", "name"))
        if user:
            self.principal_events[user] += 1
            self.principal_nodes.setdefault(user, set()).add(node)
        if dataset == GAP_DATASET:
            self._add_gap(ts_ns, Gap(iso(ts_ns), node, "gap-record", _text(_get(event, "logseal", "gap", "path")),
                                     _int_or_none(_get(event, "logseal", "gap", "bytes")),
                                     _text(_get(event, "logseal", "gap", "reason"))
                                     or _text(_get(event, "event", "reason"))))
        failure = auth_failure_kind(event)
        privileged = None if failure else privileged_kind(event)
        if failure is None and privileged is None:
            return
        uid = _text(_get(event, "user", "id"))
        actor = user or (f"uid={uid}" if uid else "")
        item = Item(iso(ts_ns), node, dataset, failure or privileged or "", actor,
                    _text(_get(event, "source", "ip")), _detail(event), _text(_get(event, "event", "id")))
        if failure is not None:
            self.failures.add(ts_ns, bucket, item)
            if user:
                self.principal_failures[user] += 1
        else:
            self.privileged.add(ts_ns, bucket, item)
            if user:
                self.principal_privileged[user] += 1

    def _add_gap(self, ts_ns: int, gap: Gap) -> None:
        self.gaps_total += 1
        self.gaps.append((ts_ns, gap))
        if len(self.gaps) > 2 * DETAIL_LIMIT:
            self.gaps.sort(key=lambda x: x[0])
            del self.gaps[DETAIL_LIMIT:]

    def add_dropped_batch(self, node: str, batch: str, first_ns: int, events: int) -> None:
        """A batch whose payload its node dropped (spool full): declared loss of `events` events."""
        self._add_gap(first_ns, Gap(iso(first_ns), node, "dropped-batch", batch, None,
                                    f"payload of {events} events dropped by the node (spool full)"))

    def add_unreadable(self, node: str, batch: str, events: int, reason: str) -> None:
        """A batch with events in the window whose payload could not be read; its events are not counted."""
        self.unreadable.append(UnreadableBatch(node, batch, events, reason))

    def add_receipt(self, node: str, received_ns: int) -> None:
        """A batch (heartbeats included) the aggregator stored for `node` at `received_ns`; in time order."""
        r = self.receipts.get(node)
        if r is None:
            self.receipts[node] = _Receipts(1, received_ns, received_ns, received_ns - self.window.since_ns,
                                            self.window.since_ns)
            return
        r.batches += 1
        if received_ns - r.last > r.silence:
            r.silence, r.silence_from = received_ns - r.last, r.last
        r.last = received_ns

    def _coverage(self) -> tuple[NodeCoverage, ...]:
        end = min(self.window.until_ns, self.generated_ns)
        out = []
        for node, r in sorted(self.receipts.items()):
            silence, start = r.silence, r.silence_from
            if end - r.last > silence:
                silence, start = end - r.last, r.last
            out.append(NodeCoverage(node, r.batches, iso(r.first), iso(r.last), max(0, silence) // _NS, iso(start)))
        return tuple(out)

    def add_rejection(self, verdict: str) -> None:
        self.rejections[verdict] += 1

    def add_alert(self, doc: Any) -> None:
        """One line of the alerts file, parsed (None if it was not JSON).

        Alerts outside the window are skipped, a repeated `event.id` counts once, malformed lines are counted.
        """
        rule = _get(doc, "rule")
        when = _get(doc, "@timestamp")
        if not isinstance(rule, dict) or not isinstance(when, str) or not isinstance(rule.get("id"), str):
            self.alert_unreadable += 1
            return
        ts_ns = _parse_ns(when)
        if ts_ns is None:
            self.alert_unreadable += 1
            return
        if not self.window.contains(ts_ns):
            return
        alert_id = _get(doc, "event", "id")
        if isinstance(alert_id, str):
            if alert_id in self._alert_ids:
                return  # outputs deliver at least once: the same alert again after a restart
            self._alert_ids.add(alert_id)
        level = _text(rule.get("level")) or "unknown"
        key = (str(rule["id"]), _text(rule.get("name")), level)
        count, last = self.alert_rules.get(key, (0, ""))
        self.alert_rules[key] = (count + 1, max(last, iso(ts_ns)))
        self.alert_levels[level] += 1
        self.alert_total += 1

    def build(self, verification: Verification, retention: Retention, alerts_source: str | None,
              alerts_note: str) -> Summary:
        w = self.window
        width = w.bucket_s * _NS
        starts = tuple(iso(w.start_ns + i * width) for i in range(w.buckets))
        nodes = tuple(sorted({n for n, _ in self.by_node_dataset}))
        datasets = tuple(sorted({d for _, d in self.by_node_dataset}))
        principals = tuple(Principal(name, count, self.principal_failures[name], self.principal_privileged[name],
                                     tuple(sorted(self.principal_nodes.get(name, ()))))
                           for name, count in _ranked(self.principal_events, TOP_PRINCIPALS))
        rules = tuple(AlertRule(rid, name, level, count, last) for (rid, name, level), (count, last) in sorted(
            self.alert_rules.items(), key=lambda kv: (-level_rank(kv[0][2]), -kv[1][0], kv[0][0])))
        levels = tuple(sorted(self.alert_levels.items(), key=lambda kv: -level_rank(kv[0])))
        self.gaps.sort(key=lambda x: x[0])
        return Summary(
            store=self.store, generated=iso(self.generated_ns), since=iso(w.since_ns), until=iso(w.until_ns),
            events=self.events, nodes=nodes, datasets=datasets,
            by_node_dataset=tuple((n, d, c) for (n, d), c in sorted(self.by_node_dataset.items())),
            timeline=Timeline(w.bucket_s, starts, _series_tuple(self.node_series), _series_tuple(self.dataset_series)),
            auth_failures=self.failures.build(), privileged=self.privileged.build(), principals=principals,
            alerts=Alerts(alerts_source, alerts_note, self.alert_total, levels, rules, self.alert_unreadable),
            gaps=tuple(g for _, g in self.gaps[:DETAIL_LIMIT]), gaps_total=self.gaps_total,
            coverage=self._coverage(),
            rejections=_ranked(self.rejections), unreadable=tuple(self.unreadable),
            verification=verification, retention=retention)


def _series_tuple(table: dict[str, list[int]]) -> tuple[Series, ...]:
    return tuple(Series(name, tuple(counts)) for name, counts in sorted(table.items(), key=lambda kv: (-sum(kv[1]),
                                                                                                       kv[0])))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_ns(value: str) -> int | None:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000


def retention_from(rows: Iterable[Mapping[str, Any]], window: Window) -> Retention:
    """Retention actions from the rows of the store's `retention` table (columns by name)."""
    actions: list[RetentionAction] = []
    outside = 0
    for row in sorted(rows, key=lambda r: _int_or_none(r.get("time_ns")) or 0):
        ts_ns = _int_or_none(row.get("time_ns")) or 0
        if not window.contains(ts_ns):
            outside += 1
            continue

        def span(a: str, b: str, r: Mapping[str, Any] = row) -> str:
            first, last = r.get(a), r.get(b)
            return "" if first is None and last is None else f"{first}..{last}"

        actions.append(RetentionAction(iso(ts_ns), str(row.get("rule") or ""), str(row.get("segment") or ""),
                                       span("first_batch_id", "last_batch_id"), span("first_leaf", "last_leaf"),
                                       _int_or_none(row.get("bytes")), str(row.get("note") or ""),
                                       bool(row.get("signature"))))
    return Retention(True, "" if actions else "no retention actions in this period", tuple(actions), outside)


NO_RETENTION = Retention(False, "no retention actions", (), 0)
