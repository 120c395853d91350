"""Retention on a real store: `logseal retention` deletes exactly the expired sealed segments with a
signed record each, `logseal verify` tells those from segments deleted by hand or covered by a
forged record, and the query sees only what remains."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent.aggregator.retention import ensure_schema, read_records
from agent.aggregator.retention_records import RetentionRecord, leaves_root, record_text, sign_record
from agent.aggregator.store import Store
from agent.checkpoint import open_note
from agent.keys import load_private_key, load_public_key
from tests.aggregator.retention_kit import RetentionKit, days_ago, event
from tests.conftest import run_cli

POLICY = '[retention]\nmax_age = { "kubernetes.audit" = "400d", "*" = "90d" }\n'


@pytest.fixture
def kit(tmp_path: Path) -> RetentionKit:
    """Five batches, one per segment; with POLICY only the first two segments have expired:

    1: system.auth 120 days old (n1)         -> expired
    2: system.auth 100 days old (n2)         -> expired
    3: system.auth 100 d + kubernetes.audit 200 d, one batch  -> kept (kubernetes.audit: 400d)
    4: system.auth 10 days old               -> kept (not 90 days old)
    5: system.auth 150 days old              -> kept: the active segment
    """
    k = RetentionKit(tmp_path, retention=POLICY)
    k.send([event(days_ago(120) + i) for i in range(3)], node="n1")
    k.send([event(days_ago(100) + i, user="bob") for i in range(2)], node="n2")
    k.send([event(days_ago(100)), event(days_ago(200), dataset="kubernetes.audit", action="delete")], node="n1",
           stream="k8s")
    k.send([event(days_ago(10))], node="n1")
    k.send([event(days_ago(150))], node="n1")
    assert k.segments == [f"0000000{i}.seg" for i in range(1, 6)]
    k.close()
    return k


def _index(kit: RetentionKit) -> sqlite3.Connection:
    return sqlite3.connect(kit.store_dir / "index.db")


def test_dry_run_lists_exactly_the_expired_segments_and_deletes_nothing(kit: RetentionKit) -> None:
    before = {name: kit.segment_path(name).read_bytes() for name in kit.segments}
    events_before = kit.query_timestamps()
    out = kit.retention_cli("--dry-run")
    assert out["dry_run"] is True
    assert [(d["segment"], d["rule"], d["batches"], d["events"]) for d in out["delete"]] == [
        ("00000001.seg", "max_age", [1, 1], 3), ("00000002.seg", "max_age", [2, 2], 2)]
    kept = {d["segment"]: d["reason"] for d in out["keep"]}
    assert list(kept) == ["00000003.seg", "00000004.seg", "00000005.seg"]
    assert "kubernetes.audit events until" in kept["00000003.seg"]
    assert "not expired" in kept["00000004.seg"]
    assert "active segment" in kept["00000005.seg"]
    assert {name: kit.segment_path(name).read_bytes() for name in kit.segments} == before
    assert kit.query_timestamps() == events_before
    with _index(kit) as db:
        assert db.execute("SELECT COUNT(*) FROM retention").fetchone()[0] == 0
    text = run_cli("retention", "--config", str(kit.config_path), "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "dry run: nothing is deleted" in text.stdout
    assert "would delete 2 segment(s)" in text.stdout


def test_apply_deletes_them_with_signed_records_and_verify_reports_deleted_by_retention(kit: RetentionKit) -> None:
    sizes = {name: kit.segment_path(name).stat().st_size for name in kit.segments}
    out = kit.retention_cli()
    assert out["dry_run"] is False
    assert [(d["segment"], d["record"]) for d in out["delete"]] == [("00000001.seg", 1), ("00000002.seg", 2)]
    assert not kit.segment_path("00000001.seg").exists() and not kit.segment_path("00000002.seg").exists()
    assert all(kit.segment_path(n).exists() for n in ("00000003.seg", "00000004.seg", "00000005.seg"))

    with _index(kit) as db:
        records = read_records(db)
        origin = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()[0]
        batches_left = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    assert [(r.id, r.segment, r.rule, r.first_batch_id, r.last_batch_id, r.first_leaf, r.last_leaf, r.events,
             r.bytes) for r in records] == [
        (1, "00000001.seg", "max_age", 1, 1, 0, 0, 3, sizes["00000001.seg"]),
        (2, "00000002.seg", "max_age", 2, 2, 1, 1, 2, sizes["00000002.seg"])]
    assert batches_left == 5  # the rows stay: their hashes are the Merkle leaves
    public = load_public_key(kit.store_dir / "aggregator.pub")
    for r in records:
        text = open_note(f"{record_text(r, origin)}\n{r.signature}\n", origin, public)
        assert f"segment {r.segment}\n" in text and f"leaves {r.first_leaf} {r.last_leaf}\n" in text

    code, report, text = kit.verify()
    assert code == 0, text
    assert report["problems"] == [] and report["checkpoints"] == 1 and report["tree_size"] == 5
    assert [(d["segment"], d["batches"], d["leaves"], d["rule"]) for d in report["deleted_by_retention"]] == [
        ("00000001.seg", [1, 1], [0, 0], "max_age"), ("00000002.seg", [2, 2], [1, 1], "max_age")]
    assert "deleted by retention policy: segment 00000001.seg, batches 1-1 (Merkle leaves 0-0)" in text
    assert "missing" not in text

    assert kit.query_timestamps() == sorted(str(e["@timestamp"]) for batch in kit.sent[2:] for e in batch)

    again = kit.retention_cli()  # nothing more is due
    assert again["delete"] == []


def test_a_segment_deleted_by_hand_is_still_missing(kit: RetentionKit) -> None:
    kit.retention_cli()
    kit.segment_path("00000003.seg").unlink()  # no record for this one
    code, report, text = kit.verify()
    assert code == 1
    kinds = {(p["kind"], p["where"].split("@")[0]) for p in report["problems"]}
    assert ("missing", "00000003.seg") in kinds
    assert not any(where in ("00000001.seg", "00000002.seg") for _, where in kinds)
    assert "inclusion-failure" in {k for k, _ in kinds}  # the signed root no longer recomputes


def _edit_record(db: sqlite3.Connection, assignment: str) -> None:
    db.execute(f"UPDATE retention SET {assignment} WHERE id = 1")


@pytest.mark.parametrize("assignment", ["rule = 'max_bytes'", "last_batch_id = 3, last_leaf = 2",
                                        "note = 'approved by nobody'", "segment = '00000003.seg'"])
def test_an_edited_retention_record_fails_verify(kit: RetentionKit, assignment: str) -> None:
    kit.retention_cli()
    with _index(kit) as db:
        _edit_record(db, assignment)
    code, report, text = kit.verify()
    assert code == 1, text
    kinds = [p["kind"] for p in report["problems"]]
    assert "bad-retention-record" in kinds
    assert "missing" in kinds  # what the record claimed to cover is gone without a trusted record


def test_a_record_forged_for_a_hand_deleted_segment_fails_verify(kit: RetentionKit) -> None:
    kit.segment_path("00000003.seg").unlink()
    forged_key = Ed25519PrivateKey.generate()  # the range the index holds, signed by another key
    with _index(kit) as db:
        origin = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()[0]
        ensure_schema(db)
        (h,) = db.execute("SELECT hash FROM batches WHERE id = 3").fetchone()
        r = RetentionRecord(1, 1, "max_age", "00000003.seg", 3, 3, 2, 2, 100, "n", "", 2, 0, 0,
                            leaves_root([merkle.leaf_hash(bytes(h))]))
        db.execute("INSERT INTO retention VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (*r.as_row()[:10], sign_record(r, origin, forged_key), *r.as_row()[11:]))
    code, report, text = kit.verify()
    assert code == 1
    assert "bad-retention-record" in text and "does not verify" in text
    assert any(p["kind"] == "missing" for p in report["problems"])


def test_a_validly_signed_record_whose_range_does_not_match_fails_verify(kit: RetentionKit) -> None:
    """Even with the aggregator key, a record must name exactly the batches the index puts in its segment."""
    kit.retention_cli()
    key = load_private_key(kit.store_dir / "aggregator.key")
    with _index(kit) as db:
        origin = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()[0]
        r = read_records(db)[0]
        wrong = dataclasses.replace(r, last_batch_id=2, last_leaf=1)
        wrong = dataclasses.replace(wrong, signature=sign_record(wrong, origin, key))
        db.execute("UPDATE retention SET last_batch_id = 2, last_leaf = 1, signature = ? WHERE id = 1",
                   (wrong.signature,))
    code, _, text = kit.verify()
    assert code == 1
    assert "signed for batches 1-2, but the index places 1-1" in text


def test_an_interrupted_deletion_verifies_and_the_next_run_finishes_it(kit: RetentionKit, tmp_path: Path) -> None:
    saved = tmp_path / "saved.seg"
    shutil.copy(kit.segment_path("00000001.seg"), saved)
    kit.retention_cli()
    shutil.copy(saved, kit.segment_path("00000001.seg"))  # as if the process died after the commit, before unlink
    code, report, text = kit.verify()
    assert code == 0, text
    assert "retention record #1: segment 00000001.seg is still present" in text
    Store(kit.store_dir).close()  # the store reopens on it
    out = kit.retention_cli()
    assert out["finished_interrupted"] == ["00000001.seg"]
    assert out["delete"] == []
    assert not kit.segment_path("00000001.seg").exists()
    code, report, text = kit.verify()
    assert code == 0, text
    assert len(report["deleted_by_retention"]) == 2


def test_max_bytes_deletes_the_oldest_first_and_never_the_active_segment(tmp_path: Path) -> None:
    k = RetentionKit(tmp_path, retention="")
    for i in range(5):
        k.send([event(days_ago(1) + j, user=f"u{i}") for j in range(2)])  # nothing is old
    k.close()
    sizes = [k.segment_path(n).stat().st_size for n in k.segments]
    k.retention = f"[retention]\nmax_bytes = {sum(sizes) - sizes[0] - sizes[1]}\n"
    k.write_config()
    out = k.retention_cli()
    assert [(d["segment"], d["rule"]) for d in out["delete"]] == [
        ("00000001.seg", "max_bytes"), ("00000002.seg", "max_bytes")]
    k.retention = "[retention]\nmax_bytes = 1\n"  # far below what the active segment alone holds
    k.write_config()
    out = k.retention_cli()
    assert [d["segment"] for d in out["delete"]] == ["00000003.seg", "00000004.seg"]
    assert [d["segment"] for d in out["keep"]] == ["00000005.seg"]
    assert k.segment_path("00000005.seg").exists()
    code, report, text = k.verify()
    assert code == 0, text
    assert len(k.query_timestamps()) == 2


def test_the_retention_command_needs_a_retention_table(tmp_path: Path) -> None:
    k = RetentionKit(tmp_path, retention="")
    k.close()
    result = run_cli("retention", "--config", str(k.config_path), "--dry-run")
    assert result.returncode == 2
    assert "retention: no [retention] table" in result.stderr


def test_events_at_time_zero_age_by_when_their_batch_arrived(tmp_path: Path) -> None:
    k = RetentionKit(tmp_path, retention='[retention]\nmax_age = { "*" = "1d" }\n')
    k.send([{"@timestamp": "1970-01-01T00:00:00.000000Z", "event": {"dataset": "system.auth"}}])  # no real time
    k.send([event(days_ago(5))])
    k.close()
    out = k.retention_cli("--dry-run")
    assert out["delete"] == []
    assert "events until" in out["keep"][0]["reason"]


def test_prove_names_the_retention_record_of_a_deleted_event(kit: RetentionKit) -> None:
    kit.retention_cli()
    result = run_cli("prove", str(kit.store_dir), "--event-id", "n1:auth:1:0", "--out", str(kit.root / "b.json"))
    assert result.returncode == 2
    assert "segment 00000001.seg was deleted by retention (rule max_age, signed record #1)" in result.stderr


def test_nothing_goes_before_a_signed_checkpoint_covers_it(tmp_path: Path) -> None:
    k = RetentionKit(tmp_path)
    k.send([event(days_ago(200))])
    k.send([event(days_ago(200))])
    k.store.close()  # no checkpoint signed
    out = k.retention_cli()
    assert out["delete"] == []
    assert "not yet under a signed checkpoint" in out["keep"][0]["reason"]


def test_hiding_a_deletion_by_removing_its_record_and_rows_is_caught_by_the_checkpoint(kit: RetentionKit) -> None:
    kit.retention_cli()
    with _index(kit) as db:
        db.execute("DELETE FROM retention")
        db.execute("DELETE FROM batches WHERE id <= 2")
    code, report, text = kit.verify()
    assert code == 1
    kinds = {p["kind"] for p in report["problems"]}
    assert "rollback" in kinds  # the signed tree of 5 batches is larger than the index of 3
    assert "missing" in kinds  # n1/auth starts at seq 2: its seq 1 is gone with no record
