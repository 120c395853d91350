"""`logseal verify`: an intact store passes; each kind of tampering is found and named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.aggregator.index_rows import index_rows
from agent.aggregator.ingest import Ingestor
from agent.aggregator.store import SEGMENT_HEADER, Store
from agent.errors import StoreError
from agent.seal import GENESIS, ChainHead, Sealer, keyring_from, open_payload
from agent.wire import batch_to_bytes
from tests.conftest import run_cli

NODE = "node-1"


def build_store(directory: Path, batches: int = 4, per_batch: int = 5) -> list[tuple[int, int]]:
    """A store filled through the real ingest path; returns (offset, length) of each record."""
    key = Ed25519PrivateKey.generate()
    store = Store(directory)
    ingestor = Ingestor(store, keyring_from({NODE: key.public_key()}))
    sealer = Sealer(NODE, key)
    head = GENESIS
    for b in range(batches):
        events = [{"@timestamp": f"2026-11-26T10:00:{b:02d}.{i:06d}Z",
                   "event": {"dataset": "system.auth", "action": "ssh_login"}, "user": {"name": f"u{i}"}}
                  for i in range(per_batch)]
        sealed = sealer.seal("auth", head, events)
        ack = ingestor.handle(batch_to_bytes(sealed), "test")
        assert ack.status == ack.STORED, ack
        head = ChainHead(sealed.header.seq, sealed.batch_hash)
    rows = store.db.execute("SELECT offset, length FROM batches ORDER BY id").fetchall()
    store.close()
    return [(int(o), int(n)) for o, n in rows]


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[tuple[int, int]]]:
    directory = tmp_path / "store"
    return directory, build_store(directory)


def segment(store_dir: Path) -> Path:
    return store_dir / "segments" / "00000001.seg"


def test_intact_store_verifies_with_exit_0(store) -> None:
    directory, _ = store
    result = run_cli("verify", str(directory), "--json")
    assert result.returncode == 0, result.stdout
    report = orjson.loads(result.stdout)
    assert report == {"store": str(directory), "ok": True, "batches": 4, "events": 20, "problems": [],
                      "declared_gaps": [], "tree_size": 4, "checkpoints": 0, "witness_checkpoints": 0,
                      "info": ["unsealed tail: 4 batch(es) after the last checkpoint (size 0); a later checkpoint "
                               "will cover them"]}


def test_one_flipped_byte_in_a_segment_exits_1_and_names_the_batch(store) -> None:
    directory, records = store
    offset, length = records[2]
    data = bytearray(segment(directory).read_bytes())
    data[offset + 9 + length - 80] ^= 0x40  # inside the third batch's payload
    segment(directory).write_bytes(bytes(data))
    result = run_cli("verify", str(directory))
    assert result.returncode == 1
    assert f"{NODE}/auth#3" in result.stdout
    assert "modified" in result.stdout
    assert f"{NODE}/auth#1" not in result.stdout and f"{NODE}/auth#4" not in result.stdout


def test_removed_record_is_reported_missing(store) -> None:
    directory, records = store
    data = segment(directory).read_bytes()
    (o2, n2) = records[1]
    start, end = o2, o2 + 9 + n2 + 4
    segment(directory).write_bytes(data[:start] + data[end:])
    result = run_cli("verify", str(directory))
    assert result.returncode == 1
    assert "missing" in result.stdout and f"{NODE}/auth#2" in result.stdout


def test_duplicated_record_is_reported_replayed(store) -> None:
    directory, records = store
    data = segment(directory).read_bytes()
    o, n = records[0]
    segment(directory).write_bytes(data + data[o:o + 9 + n + 4])
    result = run_cli("verify", str(directory))
    assert result.returncode == 1
    assert "replayed" in result.stdout


def test_swapped_records_are_reported_reordered(store) -> None:
    directory, records = store
    data = segment(directory).read_bytes()
    (o1, n1), (o2, n2) = records[1], records[2]
    first, second = data[o1:o1 + 9 + n1 + 4], data[o2:o2 + 9 + n2 + 4]
    segment(directory).write_bytes(data[:o1] + second + first + data[o2 + 9 + n2 + 4:])
    result = run_cli("verify", str(directory))
    assert result.returncode == 1
    assert "reordered" in result.stdout


def test_edited_index_row_is_reported(store) -> None:
    directory, _ = store
    db = sqlite3.connect(directory / "index.db")
    db.execute("UPDATE events SET user = 'someone-else' WHERE batch_id = 2 AND idx = 0")
    db.commit()
    db.close()
    result = run_cli("verify", str(directory))
    assert result.returncode == 1
    assert "index-mismatch" in result.stdout and f"{NODE}/auth#2" in result.stdout


def test_signature_checked_against_external_enrolment(store, tmp_path: Path) -> None:
    directory, _ = store
    other = tmp_path / "enrolled"
    other.mkdir()
    from cryptography.hazmat.primitives import serialization
    (other / f"{NODE}.pub").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = run_cli("verify", str(directory), "--keys", str(other))
    assert result.returncode == 1
    assert "unknown-key" in result.stdout


def test_not_a_store_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("verify", str(tmp_path))
    assert result.returncode == 2
    assert "not a logseal store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_index_rows_are_derived_from_the_payload(store) -> None:
    directory, records = store
    from agent.aggregator.store import read_record
    from agent.wire import batch_from_bytes
    o, n = records[0]
    body = open_payload(batch_from_bytes(read_record(segment(directory), o, n))).body
    assert body is not None
    assert [r[3] for r in index_rows(body)] == [f"u{i}" for i in range(5)]


def test_store_reopens_after_unacked_bytes_at_the_tail(store) -> None:
    directory, _ = store
    size = segment(directory).stat().st_size
    with segment(directory).open("ab") as f:
        f.write(b"LSREC\x00\x00\x10\x00torn")  # a write that died before its index commit
    Store(directory).close()
    assert segment(directory).stat().st_size == size
    assert segment(directory).read_bytes().startswith(SEGMENT_HEADER)
    assert run_cli("verify", str(directory)).returncode == 0


def test_store_refuses_to_open_when_its_index_is_gone_rather_than_cut_batches(store) -> None:
    directory, _ = store
    before = segment(directory).read_bytes()
    (directory / "index.db").unlink()
    for suffix in ("-wal", "-shm"):
        (directory / f"index.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="more than one unacknowledged write"):
        Store(directory)
    assert segment(directory).read_bytes() == before


def test_store_refuses_unknown_later_segments(store) -> None:
    directory, records = store
    o, n = records[0]
    record = segment(directory).read_bytes()[o:o + 9 + n + 4]
    (directory / "segments" / "00000002.seg").write_bytes(SEGMENT_HEADER + record + record)
    with pytest.raises(StoreError, match="holds batches the index does not know"):
        Store(directory)
    assert (directory / "segments" / "00000002.seg").exists()
