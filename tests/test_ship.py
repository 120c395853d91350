from __future__ import annotations

import random

from agent.ship import backoff_delay


def test_backoff_grows_exponentially_with_full_jitter_and_a_ceiling() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        ceiling = min(30.0, 0.2 * 2**attempt)
        delays = [backoff_delay(attempt, 0.2, 30.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range
        assert len(set(delays)) > 150  # and is not one fixed value
