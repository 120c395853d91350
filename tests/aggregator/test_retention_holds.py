"""Legal holds: `logseal hold add` keeps every segment with a matching event from retention, holds
and releases are recorded in the store, and a release lets the segments go at the next run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.aggregator.retention_kit import RetentionKit, days_ago, event, iso
from tests.conftest import run_cli


@pytest.fixture
def kit(tmp_path: Path) -> RetentionKit:
    """Four batches, one per segment, all past max_age "*" = 30d; the fourth is the active segment.

    1: n1, alice, 100 days old   2: n2, bob, 80 days old   3: n1, carol, 60 days old, action sudo
    """
    k = RetentionKit(tmp_path, retention='[retention]\nmax_age = { "*" = "30d" }\n')
    k.send([event(days_ago(100) + i) for i in range(2)], node="n1")
    k.send([event(days_ago(80), user="bob")], node="n2")
    k.send([event(days_ago(60), user="carol", action="sudo")], node="n1")
    k.send([event(days_ago(40))], node="n1")
    k.close()
    return k


def hold(kit: RetentionKit, *args: str) -> dict[str, object]:
    result = run_cli("hold", *args, "--store", str(kit.store_dir), "--json")
    assert result.returncode == 0, result.stderr
    value = orjson.loads(result.stdout)
    assert isinstance(value, dict | list)
    return value


def planned(kit: RetentionKit, *args: str) -> tuple[list[str], dict[str, list[int]]]:
    out = kit.retention_cli(*args)
    return ([str(d["segment"]) for d in out["delete"]],
            {str(d["segment"]): list(d["holds"]) for d in out["keep"]})


@pytest.mark.parametrize(("selector", "held"), [
    (["--node", "n2"], ["00000002.seg"]),
    (["--user", "carol", "--action", "sudo"], ["00000003.seg"]),
    (["--dataset", "system.auth", "--since", iso(days_ago(90)), "--until", iso(days_ago(70))], ["00000002.seg"]),
    (["--since", iso(days_ago(101))], ["00000001.seg", "00000002.seg", "00000003.seg"]),
    (["--everything"], ["00000001.seg", "00000002.seg", "00000003.seg"]),
])
def test_a_hold_keeps_exactly_the_segments_with_a_matching_event(kit: RetentionKit, selector: list[str],
                                                                 held: list[str]) -> None:
    added = hold(kit, "add", "--reason", "case 7", *selector)
    assert added["id"] == 1
    assert [s for s in added["matching_segments"] if s != "00000004.seg"] == held
    deleted, kept = planned(kit)
    expected = [s for s in ("00000001.seg", "00000002.seg", "00000003.seg") if s not in held]
    assert deleted == expected
    assert {s: kept[s] for s in held} == {s: [1] for s in held}
    assert all(kit.segment_path(s).exists() for s in held)
    assert not any(kit.segment_path(s).exists() for s in expected)
    code, _, text = kit.verify()
    assert code == 0, text


def test_release_lets_the_held_segments_go_and_both_are_recorded(kit: RetentionKit) -> None:
    hold(kit, "add", "--reason", "case 7", "--node", "n2")
    hold(kit, "add", "--reason", "case 8", "--user", "carol")
    deleted, kept = planned(kit)
    assert deleted == ["00000001.seg"]
    assert kept["00000002.seg"] == [1] and kept["00000003.seg"] == [2]

    released = hold(kit, "release", "1", "--reason", "case closed")
    assert released["released_ns"] is not None and released["release_reason"] == "case closed"
    active = hold(kit, "list")
    assert [h["id"] for h in active] == [2]
    everything = hold(kit, "list", "--all")
    assert [(h["id"], h["reason"], h["release_reason"]) for h in everything] == [
        (1, "case 7", "case closed"), (2, "case 8", None)]

    deleted, kept = planned(kit)
    assert deleted == ["00000002.seg"]
    assert kept["00000003.seg"] == [2]
    with sqlite3.connect(kit.store_dir / "index.db") as db:
        rows = db.execute("SELECT id, reason, node, user, released_ns IS NOT NULL FROM legal_holds "
                          "ORDER BY id").fetchall()
    assert rows == [(1, "case 7", "n2", None, 1), (2, "case 8", None, "carol", 0)]
    code, report, text = kit.verify()
    assert code == 0, text
    assert [d["segment"] for d in report["deleted_by_retention"]] == ["00000001.seg", "00000002.seg"]


def test_hold_usage_errors_exit_2_with_one_line(kit: RetentionKit) -> None:
    store = str(kit.store_dir)
    cases = [
        (["hold", "add", "--store", store, "--reason", "x"], "give at least one of --node"),
        (["hold", "add", "--store", store, "--reason", " ", "--node", "n1"], "--reason"),
        (["hold", "add", "--store", store, "--reason", "x", "--since", "yesterday"], "is not a time"),
        (["hold", "add", "--store", store, "--reason", "x", "--since", "1d", "--until", "2d"], "--until must be after"),
        (["hold", "release", "--store", store, "9", "--reason", "x"], "no legal hold #9"),
        (["hold", "list", "--store", str(kit.root / "nowhere")], "is not a logseal store"),
        (["hold", "frobnicate", "--store", store], "invalid choice"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    hold(kit, "add", "--reason", "r", "--node", "n1")
    hold(kit, "release", "1", "--reason", "done")
    again = run_cli("hold", "release", "--store", store, "1", "--reason", "done")
    assert again.returncode == 2 and "already released" in again.stderr
