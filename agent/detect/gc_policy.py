"""How a process that runs the detector sets Python's cyclic garbage collector.

Evaluating an event allocates thousands of short-lived containers (the decoded event, its views,
value lists, alerts) that reference counting frees at once; they form no cycles. With the default
thresholds the cyclic collector still runs every 700 allocations, and its older-generation passes
walk the compiled rules and the correlation and dedup state again and again: about a third of a
detection worker's time. `for_streaming` moves what is loaded at that moment out of the
collector's reach (`gc.freeze`) and collects the young generation every 50,000 allocations
instead; cycles, if any, are still collected, only later.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def for_streaming() -> tuple[int, int, int]:
    """Freeze the objects alive now and raise the thresholds; returns the previous thresholds."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return previous


def restore(previous: tuple[int, int, int]) -> None:
    """Undo `for_streaming` (for a process that goes on doing other work)."""
    gc.unfreeze()
    gc.set_threshold(*previous)
