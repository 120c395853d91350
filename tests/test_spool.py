"""The spool keeps each batch with its positions, forgets it only on ack, and resumes after a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import SpoolCorrupt
from agent.normalize.assemble import HeldLine
from agent.seal import GENESIS, ChainHead
from agent.spool import HeldRecord, Spool, decode_record, encode_record
from agent.tail import Position


def pos(offset: int) -> dict[str, Position]:
    p = Position("/var/log/auth.log", 2049, 77, offset)
    return {p.key: p}


def test_record_round_trips_and_detects_any_changed_byte() -> None:
    held = [HeldRecord("2049:77", "/var/log/audit/audit.log", HeldLine(b"type=SYSCALL \xff", 99, "r"))]
    record = encode_record(7, b"\x01" * 32, pos(1234), b"batch-bytes", held)
    state, batch = decode_record(record)
    assert state.head == ChainHead(7, b"\x01" * 32)
    assert state.positions == pos(1234)
    assert state.held == held
    assert batch == b"batch-bytes"
    for i in range(len(record)):
        damaged = bytearray(record)
        damaged[i] ^= 0x01
        with pytest.raises(SpoolCorrupt):
            decode_record(bytes(damaged))


def test_fresh_stream_starts_at_genesis_with_no_positions(tmp_path: Path) -> None:
    state = Spool(tmp_path).recover("auth")
    assert state.head == GENESIS and state.positions == {}


def test_recovery_resumes_from_the_newest_spooled_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover("auth")
    spool.append("auth", 1, b"\x01" * 32, pos(100), b"one")
    spool.append("auth", 2, b"\x02" * 32, pos(200), b"two")
    reopened = Spool(tmp_path)
    state = reopened.recover("auth")
    assert state.head == ChainHead(2, b"\x02" * 32)
    assert state.positions == pos(200)
    assert reopened.subscribe() == [("auth", 1), ("auth", 2)]
    assert reopened.read(("auth", 1)) == b"one"


def test_ack_checkpoints_positions_before_forgetting_the_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover("auth")
    spool.append("auth", 1, b"\x01" * 32, pos(100), b"one")
    assert spool.ack(("auth", 1))
    assert not list((tmp_path / "auth").glob("*.batch"))
    state = Spool(tmp_path).recover("auth")
    assert state.head == ChainHead(1, b"\x01" * 32)
    assert state.positions == pos(100)


def test_unacked_batches_are_resent_after_restart_acked_ones_are_not(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover("auth")
    for seq in (1, 2, 3):
        spool.append("auth", seq, bytes([seq]) * 32, pos(seq * 100), f"b{seq}".encode())
    spool.ack(("auth", 1))
    reopened = Spool(tmp_path)
    reopened.recover("auth")
    assert reopened.subscribe() == [("auth", 2), ("auth", 3)]


def test_corrupt_spool_file_is_quarantined_not_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recover("auth")
    spool.append("auth", 1, b"\x01" * 32, pos(100), b"one")
    path = tmp_path / "auth" / "0000000000000001.batch"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    Spool(tmp_path).recover("auth")
    assert not path.exists()
    assert (tmp_path / "quarantine" / "auth-0000000000000001.batch").read_bytes() == bytes(data)


def test_leftover_temp_file_of_an_interrupted_write_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "auth").mkdir(parents=True)
    (tmp_path / "auth" / "0000000000000001.batch.tmp").write_bytes(b"half a rec")
    state = Spool(tmp_path).recover("auth")
    assert state.head == GENESIS
    assert not list((tmp_path / "auth").iterdir())
