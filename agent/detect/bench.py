"""Detection throughput, for `logseal bench`: events per second through a `Detector`, one core, with
the garbage collector set as in the aggregator's detection worker (`gc_policy`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.detect import gc_policy
from agent.detect.engine import Detector

DEFAULT_PACKS = ("builtin:kubernetes", "builtin:linux", "builtin:logseal")


def detect_throughput(events: Sequence[dict[str, Any]], specs: Sequence[str] = DEFAULT_PACKS) -> float:
    """Events/s of `Detector.process` over `events` (normalized) with `specs` loaded (rule loading not timed)."""
    detector = Detector.load(list(specs))
    previous = gc_policy.for_streaming()  # as the aggregator's detection worker runs
    try:
        start = time.perf_counter()
        for event in events:
            detector.process(event)
        elapsed = time.perf_counter() - start
    finally:
        gc_policy.restore(previous)
    return len(events) / elapsed if elapsed > 0 else float("inf")
