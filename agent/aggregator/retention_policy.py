"""What retention may delete and why: a pure planner over facts about the store's segments.

Design constraints:
- Only whole sealed segments go. The active segment (the one the store appends to, and any newer
  file) is never planned for deletion.
- A segment mixes datasets, so it expires by age only when *every* event in it is older than the
  `max_age` of its own dataset (`"*"` for datasets not named, and for events without a dataset).
  An event of a dataset with no rule (no `"*"`) keeps its segment forever, as far as age goes.
  A segment without events (heartbeats, dropped payloads) ages by when its last batch arrived,
  under `"*"`.
- Age is judged by the events' own `@timestamp`, so a clock that runs ahead keeps data longer,
  never shorter than asked. An event at time 0 (the epoch, which the index also records for a
  timestamp it cannot read) ages by when its batch arrived.
- `max_bytes` bounds the bytes of segment files: while they add up to more, the oldest segments
  go first (after those expired by age).
- A legal hold that matches any event of a segment keeps it, whatever the rules say.
- A segment goes only once a signed checkpoint covers all its batches, so every deleted batch is
  committed in a signed tree head: removing a retention record (and the batches' index rows) later
  cannot go unseen.

No I/O and no clock: the shell (`retention.py`) reads the facts and passes `now_ns` in.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import ConfigError

RULE_MAX_AGE = "max_age"
RULE_MAX_BYTES = "max_bytes"
ANY_DATASET = "*"

_AGE_RE = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_UNIT_NS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> int:
    """`90d`, `12h`, `30m`, `45s`, `2w` -> nanoseconds; ValueError otherwise."""
    match = _AGE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an age: use a positive whole number and a unit s, m, h, d or w "
                         "(e.g. \"90d\")")
    return int(match.group(1)) * _UNIT_NS[match.group(2)] * 1_000_000_000


def format_ns(ns: int) -> str:
    """A time in ns as RFC 3339 UTC with seconds (for reasons and reports)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """`max_age` per dataset (in ns; `"*"` for every other dataset) and `max_bytes` (0 = no limit)."""

    max_age_ns: Mapping[str, int]
    max_age_text: Mapping[str, str]
    max_bytes: int = 0

    def max_age_for(self, dataset: str) -> tuple[int, str] | None:
        """(ns, as configured) for a dataset, or None when no rule ages it."""
        for key in (dataset, ANY_DATASET):
            if key in self.max_age_ns:
                return self.max_age_ns[key], self.max_age_text[key]
        return None


def policy_from(max_age: Mapping[str, str], max_bytes: int, where: str) -> RetentionPolicy:
    """Validate `[retention]` values into a policy; ConfigError names the key and the fix."""
    ages: dict[str, int] = {}
    for dataset, text in max_age.items():
        if not dataset or any(c.isspace() for c in dataset):
            raise ConfigError(f"{where}.max_age: dataset name {dataset!r} must be non-empty without spaces "
                              "(e.g. \"kubernetes.audit\", or \"*\" for every other dataset)")
        try:
            ages[dataset] = parse_age(text)
        except ValueError as exc:
            raise ConfigError(f"{where}.max_age.{dataset}: {exc}") from None
    if max_bytes < 0:
        raise ConfigError(f"{where}.max_bytes: must be at least 0 (0 = no limit), got {max_bytes}")
    if not ages and not max_bytes:
        raise ConfigError(f"{where}: give max_age (e.g. max_age = {{ \"*\" = \"90d\" }}) or max_bytes; "
                          "or remove [retention] to keep everything")
    return RetentionPolicy(ages, dict(max_age), max_bytes)


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """What the planner needs to know about one segment file."""

    name: str
    bytes: int
    first_batch: int
    last_batch: int
    events: int
    newest_by_dataset: tuple[tuple[str, int], ...]
    """(dataset, newest event time ns) for each dataset in it; "" for events without one."""
    last_received_ns: int
    active: bool = False
    holds: tuple[int, ...] = ()
    """Ids of the active legal holds that match an event in it."""
    checkpointed: bool = True
    """Every batch in it is under a signed checkpoint."""


@dataclass(frozen=True, slots=True)
class Decision:
    segment: SegmentFacts
    rule: str
    """`max_age` or `max_bytes` for a deletion; "" for a segment that stays."""
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    deletions: tuple[Decision, ...]
    kept: tuple[Decision, ...]
    segment_bytes: int
    """Bytes of all segment files before."""
    max_bytes: int

    @property
    def bytes_deleted(self) -> int:
        return sum(d.segment.bytes for d in self.deletions)


def _age_verdict(seg: SegmentFacts, policy: RetentionPolicy, now_ns: int) -> tuple[bool, str]:
    """(expired, why) for one segment under the max_age rules."""
    if not seg.newest_by_dataset:
        rule = policy.max_age_for(ANY_DATASET)
        if rule is None:
            return False, "no events, and no \"*\" max_age to age it by"
        ns, text = rule
        if now_ns - seg.last_received_ns > ns:
            return True, f"no events; its last batch arrived {format_ns(seg.last_received_ns)}, past \"*\" {text}"
        return False, f"no events; it is kept until {format_ns(seg.last_received_ns + ns)} (\"*\" {text})"
    parts: list[str] = []
    keep: list[str] = []
    for dataset, newest in sorted(seg.newest_by_dataset):
        label = dataset or "(no dataset)"
        rule = policy.max_age_for(dataset)
        if rule is None:
            keep.append(f"{label} has no max_age")
            continue
        ns, text = rule
        if now_ns - newest > ns:
            parts.append(f"{label} newest {format_ns(newest)} > {text}")
        else:
            keep.append(f"{label} events until {format_ns(newest + ns)} ({text})")
    if keep:
        return False, "not expired: " + "; ".join(keep)
    return True, "every event is past its dataset's max_age: " + "; ".join(parts)


def plan(segments: Sequence[SegmentFacts], policy: RetentionPolicy, now_ns: int) -> Plan:
    """Decide, for each segment, whether it goes (and by which rule) or stays (and why)."""
    ordered = sorted(segments, key=lambda s: s.name)
    deletions: dict[str, Decision] = {}
    kept: dict[str, Decision] = {}
    held_names = {s.name for s in ordered if s.holds}

    def held(seg: SegmentFacts) -> str:
        return "held by legal hold " + ", ".join(f"#{h}" for h in seg.holds)

    for seg in ordered:
        if seg.active:
            kept[seg.name] = Decision(seg, "", "the active segment (still appended to)")
            continue
        if not seg.checkpointed:
            kept[seg.name] = Decision(seg, "", "not yet under a signed checkpoint (one is signed every "
                                               "checkpoint_interval_s)")
            continue
        expired, why = _age_verdict(seg, policy, now_ns) if policy.max_age_ns else (False, "no max_age rule")
        if not expired:
            kept[seg.name] = Decision(seg, "", why)
        elif seg.name in held_names:
            kept[seg.name] = Decision(seg, "", f"{held(seg)} (else: {why})")
        else:
            deletions[seg.name] = Decision(seg, RULE_MAX_AGE, why)
    total = sum(s.bytes for s in ordered)
    if policy.max_bytes:
        remaining = total - sum(d.segment.bytes for d in deletions.values())
        for seg in ordered:
            if remaining <= policy.max_bytes:
                break
            if seg.active or not seg.checkpointed or seg.name in deletions:
                continue
            if seg.name in held_names:
                previous = kept[seg.name].reason
                if not previous.startswith("held"):
                    kept[seg.name] = Decision(seg, "", f"{held(seg)} (else: over max_bytes)")
                continue
            deletions[seg.name] = Decision(
                seg, RULE_MAX_BYTES, f"segments hold {remaining} bytes, over max_bytes {policy.max_bytes}; "
                                     "the oldest go first")
            del kept[seg.name]
            remaining -= seg.bytes
    return Plan(tuple(deletions[n] for n in sorted(deletions)), tuple(kept[n] for n in sorted(kept)), total,
                policy.max_bytes)


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: every stored event matching all of its given selectors is kept.

    Selectors mean what `logseal query` means by them: node, dataset, user name, action equal;
    `since_ns <= @timestamp < until_ns`.
    """

    id: int
    created_ns: int
    reason: str
    node: str | None = None
    dataset: str | None = None
    user: str | None = None
    action: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    released_ns: int | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_ns is None

    def where(self) -> tuple[str, list[str | int]]:
        """SQL condition over `events e` (and the parameters) matching the events this hold keeps."""
        clauses: list[str] = []
        params: list[str | int] = []
        for column, value in (("e.node", self.node), ("e.dataset", self.dataset), ("e.user", self.user),
                              ("e.action", self.action)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since_ns is not None:
            clauses.append("e.ts_ns >= ?")
            params.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append("e.ts_ns < ?")
            params.append(self.until_ns)
        return (" AND ".join(clauses) or "1"), params

    def selector(self) -> str:
        parts = [f"{name}={value}" for name, value in (("node", self.node), ("dataset", self.dataset),
                                                        ("user", self.user), ("action", self.action))
                 if value is not None]
        if self.since_ns is not None:
            parts.append(f"since={format_ns(self.since_ns)}")
        if self.until_ns is not None:
            parts.append(f"until={format_ns(self.until_ns)}")
        return " ".join(parts) or "everything"
