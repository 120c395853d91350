"""A full spool either waits (block) or drops the oldest payload with a gap record (drop_oldest);
a full disk is handled like a full spool, never a crash."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.seal import GENESIS, ChainHead, Sealer
from agent.spool import Spool, SpoolStopped, decode_record
from agent.wire import batch_from_bytes, batch_to_bytes


def sealed_batches(count: int, events: int = 200) -> list[tuple[int, bytes, bytes]]:
    sealer = Sealer("node-1", Ed25519PrivateKey.generate(), zstd_level=1)
    head, out = GENESIS, []
    for seq in range(1, count + 1):
        batch = sealer.seal("s", head, [{"@timestamp": "2026-11-26T10:00:00.000000Z", "event": {},
                                         "message": f"{seq}-{i}-" + "y" * 100 + str(i * seq)} for i in range(events)])
        out.append((seq, batch.batch_hash, batch_to_bytes(batch)))
        head = ChainHead(seq, batch.batch_hash)
    return out


def test_drop_oldest_keeps_the_signed_header_and_reports_the_loss(tmp_path: Path) -> None:
    batches = sealed_batches(6)
    spool = Spool(tmp_path, max_bytes=1 << 30, when_full="drop_oldest")
    spool.recover("s")
    spool.append("s", batches[0][0], batches[0][1], {}, batches[0][2])
    spool.max_bytes = 3 * spool.bytes_used  # room for three whole batches
    for seq, digest, raw in batches[1:]:
        spool.append("s", seq, digest, {}, raw)
    assert spool.bytes_used <= spool.max_bytes
    dropped = spool.take_dropped("s")
    assert [d.seq for d in dropped] == list(range(1, len(dropped) + 1)) and dropped  # the oldest, in order
    assert all(d.event_count == 200 for d in dropped)
    first = batch_from_bytes(decode_record((tmp_path / "s" / "0000000000000001.batch").read_bytes())[1])
    assert first.payload_dropped and first.payload == b""
    assert first.batch_hash == batches[0][1]  # still the same signed, chained header
    assert spool.counters["batches_dropped"] == len(dropped)
    assert spool.subscribe() == [("s", seq) for seq in range(1, 7)]  # nothing forgotten: all still to send


def test_block_waits_for_an_ack_to_make_room(tmp_path: Path) -> None:
    batches = sealed_batches(3)
    spool = Spool(tmp_path, max_bytes=1 << 30, when_full="block")
    spool.recover("s")
    for seq, digest, raw in batches[:2]:
        spool.append("s", seq, digest, {}, raw)
    spool.max_bytes = spool.bytes_used + 64  # full for a third batch; an ack makes room for it
    done = threading.Event()

    def third() -> None:
        seq, digest, raw = batches[2]
        spool.append("s", seq, digest, {}, raw)
        done.set()

    writer = threading.Thread(target=third)
    writer.start()
    assert not done.wait(0.3), "the third batch must wait for room"
    spool.ack(("s", 1))
    acked = done.wait(10)
    spool.stop_waiting()  # never leave the writer blocked, whatever happened
    writer.join(10)
    assert acked, "an ack did not let the blocked batch in"
    assert spool.counters["full_waits"] >= 1
    assert spool.take_dropped("s") == []


def test_a_writer_blocked_on_a_full_spool_is_released_at_shutdown(tmp_path: Path) -> None:
    batches = sealed_batches(2)
    spool = Spool(tmp_path, max_bytes=1 << 30, when_full="block")
    spool.recover("s")
    spool.append("s", batches[0][0], batches[0][1], {}, batches[0][2])
    spool.max_bytes = spool.bytes_used
    errors: list[BaseException] = []

    def second() -> None:
        try:
            spool.append("s", batches[1][0], batches[1][1], {}, batches[1][2])
        except SpoolStopped as exc:
            errors.append(exc)

    writer = threading.Thread(target=second)
    writer.start()
    spool.stop_waiting()
    writer.join(10)
    assert len(errors) == 1
    assert not (tmp_path / "s" / "0000000000000002.batch").exists()


def test_enospc_is_handled_like_a_full_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import agent.spool as spool_module

    batches = sealed_batches(2)
    spool = Spool(tmp_path, max_bytes=1 << 30, when_full="drop_oldest")
    spool.recover("s")
    spool.append("s", batches[0][0], batches[0][1], {}, batches[0][2])
    real_write = spool_module._write_atomic
    failures = iter([OSError(errno.ENOSPC, "No space left on device")])

    def full_disk_once(path: Path, data: bytes) -> None:
        for failure in failures:
            raise failure
        real_write(path, data)

    monkeypatch.setattr(spool_module, "_write_atomic", full_disk_once)
    spool.append("s", batches[1][0], batches[1][1], {}, batches[1][2])
    assert spool.counters["enospc"] == 1
    assert [d.seq for d in spool.take_dropped("s")] == [1]
    assert (tmp_path / "s" / "0000000000000002.batch").exists()
