"""Detection throughput, for `logseal bench`: events per second through a `Detector`, one core."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.detect.engine import Detector

DEFAULT_PACKS = ("builtin:kubernetes", "builtin:linux", "builtin:logseal")


def detect_throughput(events: Sequence[dict[str, Any]], specs: Sequence[str] = DEFAULT_PACKS) -> float:
    """Events/s of `Detector.process` over `events` (normalized) with `specs` loaded (rule loading not timed)."""
    detector = Detector.load(list(specs))
    start = time.perf_counter()
    for event in events:
        detector.process(event)
    elapsed = time.perf_counter() - start
    return len(events) / elapsed if elapsed > 0 else float("inf")
