"""The reorder buffer behind the auditd assembler: groups records into events, finds lost serials.

auditd writes one event as several records (lines) sharing `msg=audit(EPOCH:SERIAL)`, possibly
interleaved with other events' records and out of order. This module knows nothing of the record
format: the family module (`auditd.py`) parses a line into a `Parsed` and builds the event of a
finished group. What is decided here:

* **Grouping** by `(node, epoch, serial)`. A group is finished
  - at once when its record is of a type that is always alone (`Parsed.alone`, user-space and
    daemon messages), or when an EOE record (`Parsed.ends`) arrives for a group holding records;
  - when its first line was received more than `window_ns` ago (`flush(received)`, and every
    `feed`), or when more than `max_events` groups are held (the oldest goes first);
  - on `flush(received, force=True)`: everything.
  An EOE arriving for no held group starts one (its records may still come); a record arriving
  for a group already returned starts a new one. Nothing is ever dropped.
* **Lost events**, as go-libaudit's reassembler counts them: a forward jump in the serials of one
  node (modulo 2**32, so 4294967295 -> 0 is no loss) opens a hole; records arriving within the
  window fill it; what is still missing when the hole is older than the window (or on a forced
  flush) is reported as one `lost` event per hole. A jump of 2**24 or more either way is a restart
  of the serial counter (reboot), not a loss.
* **held()** lists the lines of every group not yet returned, in the order they were fed: the
  pipeline persists them with each batch and feeds them again after a crash. Lines that are not
  records (`parse` returned an error) become events at once and are never held.

Pure: no I/O, no clock; `received` is the only notion of now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.normalize.assemble import HeldLine
from agent.normalize.common import Event, timestamp_to_ns

SERIAL_MODULUS = 1 << 32
# Serials further apart than this (either way) are a restart of the counter, not a gap or a late record.
RESTART_DISTANCE = 1 << 24
DEFAULT_WINDOW_NS = 2_000_000_000
DEFAULT_MAX_EVENTS = 256


@dataclass(slots=True)
class Parsed:
    """What the family parser tells the buffer about one record line."""

    node: str
    epoch: str
    sequence: int
    record: Any  # opaque to the buffer: handed back to `build`
    ends: bool = False  # an EOE record: the event is complete
    alone: bool = False  # a record type that is always a whole event on its own


@dataclass(slots=True)
class _Group:
    records: list[Any] = field(default_factory=list)
    lines: list[tuple[int, HeldLine]] = field(default_factory=list)
    first_ns: int = 0


@dataclass(slots=True)
class _Hole:
    low: int  # unwrapped serials, inclusive
    high: int
    seen_ns: int
    timestamp: str  # of the record that revealed it
    offset: int


@dataclass(slots=True)
class _Serials:
    last: int  # highest unwrapped serial seen
    holes: list[_Hole] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lost:
    """A run of serials that never arrived (`first`..`last` as logged, modulo 2**32)."""

    node: str
    first: int
    last: int
    count: int
    timestamp: str
    offset: int


ParseFn = Callable[[bytes], "Parsed | str"]
BuildFn = Callable[[list[Any], list[HeldLine]], Event]
UnparsedFn = Callable[[bytes, int, str, str], Event]
LostFn = Callable[[Lost], Event]
TimestampFn = Callable[[Any], str]


class ReorderBuffer:
    """An `Assembler` (see assemble.py) for record formats grouped by node, epoch and serial."""

    def __init__(self, *, parse: ParseFn, build: BuildFn, unparsed: UnparsedFn, lost: LostFn,
                 timestamp_of: TimestampFn, window_ns: int = DEFAULT_WINDOW_NS,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self._parse = parse
        self._build = build
        self._unparsed = unparsed
        self._lost = lost
        self._timestamp_of = timestamp_of
        self._window_ns = window_ns
        self._max_events = max(1, max_events)
        self._groups: dict[tuple[str, str, int], _Group] = {}
        self._serials: dict[str, _Serials] = {}
        self._fed = 0
        self._received = ""
        self._now = 0
        self._counters: dict[str, int] = {}

    # -- the Assembler interface --------------------------------------------------------------

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        now = self._clock(received)
        self._fed += 1
        held = HeldLine(line, offset, received)
        parsed = self._parse(line)
        if isinstance(parsed, str):
            out = [self._unparsed(line, offset, received, parsed)]
            out.extend(self._due(now, force=False, scan_all=False))
            return out
        self._track(parsed, now, offset)
        key = (parsed.node, parsed.epoch, parsed.sequence)
        group = self._groups.get(key)
        out = []
        if group is None:
            if parsed.alone:
                out.append(self._build([parsed.record], [held]))
                out.extend(self._due(now, force=False, scan_all=False))
                return out
            group = self._groups[key] = _Group(first_ns=now)
        group.records.append(parsed.record)
        group.lines.append((self._fed, held))
        if parsed.alone or (parsed.ends and len(group.records) > 1):
            del self._groups[key]
            out.append(self._emit(group))
        elif len(self._groups) > self._max_events:
            oldest = next(iter(self._groups))
            out.append(self._emit(self._groups.pop(oldest)))
            self._count("evicted_full")
        out.extend(self._due(now, force=False, scan_all=False))
        return out

    def flush(self, received: str, force: bool = False) -> list[Event]:
        return self._due(self._clock(received), force=force, scan_all=True)

    def held(self) -> list[HeldLine]:
        if len(self._groups) == 1:
            return [line for _, line in next(iter(self._groups.values())).lines]
        lines = [entry for group in self._groups.values() for entry in group.lines]
        lines.sort(key=lambda entry: entry[0])
        return [line for _, line in lines]

    def counters(self) -> dict[str, int]:
        return self._counters

    # -- internals ------------------------------------------------------------------------------

    def _count(self, name: str, by: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + by

    def _clock(self, received: str) -> int:
        if received != self._received:
            with contextlib.suppress(ValueError, TypeError, OverflowError):  # else keep the last time
                self._now = timestamp_to_ns(received)
            self._received = received
        return self._now

    def _emit(self, group: _Group) -> Event:
        return self._build(group.records, [line for _, line in group.lines])

    def _due(self, now: int, *, force: bool, scan_all: bool) -> list[Event]:
        out: list[Event] = []
        if self._groups:
            deadline = now - self._window_ns
            if force:
                due = list(self._groups)
            elif scan_all:
                due = [key for key, group in self._groups.items() if group.first_ns < deadline]
            else:
                due = []
                for key, group in self._groups.items():
                    if group.first_ns >= deadline:
                        break
                    due.append(key)
            for key in due:
                out.append(self._emit(self._groups.pop(key)))
                self._count("completed_by_flush" if force else "completed_by_window")
        for node, serials in self._serials.items():
            if serials.holes:
                out.extend(self._report_holes(node, serials, now, force))
        return out

    def _report_holes(self, node: str, serials: _Serials, now: int, force: bool) -> list[Event]:
        out: list[Event] = []
        keep: list[_Hole] = []
        deadline = now - self._window_ns
        limit = len(serials.holes) - self._max_events  # too many holes: the oldest are reported
        for index, hole in enumerate(serials.holes):
            if force or hole.seen_ns < deadline or index < limit:
                count = hole.high - hole.low + 1
                self._count("lost_events", count)
                out.append(self._lost(Lost(node=node, first=hole.low % SERIAL_MODULUS,
                                           last=hole.high % SERIAL_MODULUS, count=count,
                                           timestamp=hole.timestamp, offset=hole.offset)))
            else:
                keep.append(hole)
        serials.holes = keep
        return out

    def _track(self, parsed: Parsed, now: int, offset: int) -> None:
        """Follow the serials of the record's node: open holes on forward jumps, fill them late."""
        serials = self._serials.get(parsed.node)
        sequence = parsed.sequence % SERIAL_MODULUS
        if serials is None:
            self._serials[parsed.node] = _Serials(last=sequence)
            return
        forward = (sequence - serials.last) % SERIAL_MODULUS
        if forward == 0:
            return
        if forward < RESTART_DISTANCE:
            unwrapped = serials.last + forward
            if forward > 1:
                serials.holes.append(_Hole(serials.last + 1, unwrapped - 1, now,
                                           self._timestamp_of(parsed.record), offset))
            serials.last = unwrapped
            return
        backward = SERIAL_MODULUS - forward
        if backward < RESTART_DISTANCE:
            self._fill(serials, serials.last - backward)
            return
        # A restart of the counter: start over from here (what is still missing stays reported).
        serials.last = serials.last + RESTART_DISTANCE * 2
        serials.last += (sequence - serials.last) % SERIAL_MODULUS
        self._count("serial_restarts")

    @staticmethod
    def _fill(serials: _Serials, unwrapped: int) -> None:
        for index, hole in enumerate(serials.holes):
            if hole.low <= unwrapped <= hole.high:
                parts = []
                if hole.low < unwrapped:
                    parts.append(_Hole(hole.low, unwrapped - 1, hole.seen_ns, hole.timestamp, hole.offset))
                if unwrapped < hole.high:
                    parts.append(_Hole(unwrapped + 1, hole.high, hole.seen_ns, hole.timestamp, hole.offset))
                serials.holes[index:index + 1] = parts
                return
