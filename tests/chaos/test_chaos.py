"""The CI chaos run: a fixed seed, about 100 s on a 2-core machine (see tests/chaos/harness.py).

What it asserts depends only on the seed's plan and on the invariants, never on timing: every
written line stored exactly once and in order per written file, `logseal verify` clean, no gap
record but the one loss caused on purpose (lines appended while the agent is stopped, then
copytruncated to a copy no glob finds), and that one present; the agent exiting 0 on SIGTERM.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos.harness import Settings, run_chaos

SEED = 20261126
DURATION_S = 90.0


def test_nothing_lost_nothing_doubled_under_rotation_kills_restarts_and_cuts(tmp_path: Path) -> None:
    summary = run_chaos(Settings(seed=SEED, duration_s=DURATION_S, workdir=tmp_path / "chaos",
                                 drain_timeout_s=60.0, job_timeout_s=45.0))
    brief = json.dumps({k: v for k, v in summary.items() if k not in ("agent_status", "per_file")}, default=str)
    assert summary["ok"], "chaos run failed:\n- " + "\n- ".join(summary["failures"]) + f"\nsummary: {brief}"
    # The faults really happened, as often as the issue asks.
    assert summary["agent_kills"] >= 10, brief
    assert summary["aggregator_restarts"] >= 3, brief
    assert summary["network_cuts"] >= 3, brief
    assert set(summary["rotations"]) == {"rename", "copytruncate", "compress", "delete", "kube",
                                         "copytruncate_copy_lost"}, brief
    # The one loss on purpose is the one gap, in the stream and in verify's report.
    assert summary["gaps_found"] == summary["gaps_expected"] == summary["gaps_declared_by_verify"] == 1, brief
    # And the agent saw them: rotations followed and reconnects made.
    counters = summary["agent_counters_all_runs"]
    assert counters.get("tail.rotations.copytruncate", 0) >= 1, brief
    assert counters.get("tail.rotations.rename", 0) >= 1, brief
    lost = sum(p["lost_on_purpose"] for p in summary["per_file"].values())
    assert lost == 20 and summary["lines_stored"] == summary["lines_written"] - lost > 0, brief
    assert summary["agent_exit_code"] == 0 and summary["verify_exit_code"] == 0, brief


def test_key_epochs_change_safely_under_kills_restarts_and_cuts(tmp_path: Path) -> None:
    """The same faults while the node changes its signing key every 10 batches: a kill -9 can land
    inside an epoch change, and every batch of every epoch is still stored once and verifies."""
    import sqlite3

    workdir = tmp_path / "chaos"
    summary = run_chaos(Settings(seed=SEED + 1, duration_s=40.0, workdir=workdir, drain_timeout_s=60.0,
                                 job_timeout_s=45.0, epoch_batches=10))
    brief = json.dumps({k: v for k, v in summary.items() if k not in ("agent_status", "per_file")}, default=str)
    assert summary["ok"], "chaos run failed:\n- " + "\n- ".join(summary["failures"]) + f"\nsummary: {brief}"
    assert summary["agent_kills"] >= 10 and summary["verify_exit_code"] == 0, brief
    (index,) = list(workdir.rglob("index.db"))
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    epochs = conn.execute("SELECT MAX(epoch) FROM node_keys").fetchone()[0]
    misuse = conn.execute("SELECT COUNT(*) FROM rejections WHERE verdict IN ('KEY_EPOCH_MISUSE', 'REPLAYED')")
    assert epochs >= 5 and misuse.fetchone()[0] == 0, (epochs, brief)
    conn.close()
