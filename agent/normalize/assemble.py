"""The interface between tailing and normalizing: an assembler turns lines into events.

Most families make exactly one event per line (`PerLine`). Some must hold lines back: auditd
writes one event as several records, CRI splits long lines into partial records, a Kubernetes
audit policy drops events. An assembler may therefore return no event, or several, for a line.

Invariants the pipeline relies on:
- Every line fed is, at any moment, either part of an event already returned or listed by
  `held()`. The pipeline stores `held()` with each spooled batch, so after a crash the held lines
  are fed again and nothing is lost or doubled.
- `flush(received, force=False)` returns events whose lines have waited long enough by the
  family's own rule (e.g. a reorder window); `force=True` returns everything held, as complete
  as it can be (on shutdown, or when the file ends).
- Pure: no I/O, no clock. `received` (canonical RFC 3339 UTC) is the only notion of now.
- Events dropped on purpose (a policy) are counted in `counters()`, never silently lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.normalize.common import Event

LineNormalizer = Callable[[bytes, int, str], Event]


@dataclass(frozen=True)
class NormalizeOptions:
    """Per-source settings of the normalizers, parsed and loaded by the caller (no I/O here)."""

    # A parsed Kubernetes audit Policy (agent.normalize.k8s_policy.AuditPolicy) or None: keep all.
    k8s_policy: Any = None
    # Key of the keyed hash in redaction markers (equal secrets give equal markers under one key).
    redact_key: bytes = b"logseal-default-redaction-key"
    # Extra JSON paths to redact in Kubernetes audit events, e.g. "requestObject.spec.password".
    redact_paths: tuple[str, ...] = ()
    # Zone of RFC 3164 syslog timestamps, which carry none (an IANA name, e.g. "Europe/Berlin").
    syslog_timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class HeldLine:
    """A line fed to an assembler that is not yet part of any returned event."""

    line: bytes
    offset: int
    received: str


class Assembler(Protocol):
    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        """Take one line (without its newline) at byte `offset`; return the events it completes."""
        ...

    def flush(self, received: str, force: bool = False) -> list[Event]:
        """Return held events that are due (all of them when `force`)."""
        ...

    def held(self) -> list[HeldLine]:
        """Lines fed but not yet in a returned event, in the order they were fed."""
        ...

    def counters(self) -> dict[str, int]:
        """Named counts of what the assembler did on purpose (e.g. `dropped_by_policy.rule_3`)."""
        ...


@dataclass
class PerLine:
    """One event per line, nothing held: the assembler of line-oriented families."""

    normalize: LineNormalizer
    _counters: dict[str, int] = field(default_factory=dict)

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        return [self.normalize(line, offset, received)]

    def flush(self, received: str, force: bool = False) -> list[Event]:
        return []

    def held(self) -> list[HeldLine]:
        return []

    def counters(self) -> dict[str, int]:
        return self._counters
