"""The pipeline spools, with each batch, exactly what resuming needs: file positions and held lines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.normalize as normalize
from agent.config import BatchConfig, SourceConfig, TailConfig
from agent.normalize import NormalizeOptions, SourceContext
from agent.normalize.assemble import HeldLine
from agent.normalize.common import Event, base_event
from agent.pipeline import SealWorker, StreamPipeline
from agent.seal import ChainHead, Sealer, decode_events, open_payload
from agent.spool import Spool, decode_record
from agent.wire import batch_from_bytes

RECEIVED = "2026-11-26T10:00:00.000000Z"


@dataclass
class UntilEnd:
    """A test family: one event per group of lines ending with a line `END`."""

    ctx: SourceContext
    lines: list[HeldLine] = field(default_factory=list)

    def feed(self, line: bytes, offset: int, received: str) -> list[Event]:
        self.lines.append(HeldLine(line, offset, received))
        if line != b"END":
            return []
        group, self.lines = self.lines, []
        event = base_event(line=b"\n".join(h.line for h in group), offset=group[0].offset, ctx=self.ctx,
                           timestamp=received, dataset="test", action="group", outcome="unknown", category=[],
                           types=["info"])
        return [event]

    def flush(self, received: str, force: bool = False) -> list[Event]:
        return []

    def held(self) -> list[HeldLine]:
        return list(self.lines)

    def counters(self) -> dict[str, int]:
        return {}


@pytest.fixture
def grouped_family(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setitem(normalize.ASSEMBLERS, "grouped", lambda ctx, options: UntilEnd(ctx))
    yield "grouped"


def make_pipeline(spool_dir: Path, log: Path, source_type: str, key: Ed25519PrivateKey,
                  max_events: int) -> tuple[StreamPipeline, SealWorker]:
    spool = Spool(spool_dir)
    sealer = Sealer("node-1", key)
    heads: dict[str, ChainHead] = {}
    worker = SealWorker(sealer, spool, heads)
    source = SourceConfig(type=source_type, paths=[str(log)], name="s")
    pipeline = StreamPipeline(source, "node-1", sealer, spool, BatchConfig(max_events=max_events), TailConfig(),
                              heads, worker, NormalizeOptions())
    pipeline.scan()
    return pipeline, worker


def spooled_originals(spool_dir: Path) -> list[str]:
    out = []
    for path in sorted((spool_dir / "s").glob("*.batch")):
        _, raw = decode_record(path.read_bytes())
        body = open_payload(batch_from_bytes(raw)).body
        assert body is not None
        out += [e["event"]["original"] for e in decode_events(body)]
    return out


def test_lines_held_at_a_crash_are_fed_again_and_nothing_is_doubled(tmp_path: Path, grouped_family: str) -> None:
    log = tmp_path / "groups.log"
    log.write_bytes(b"a1\na2\nEND\nb1\nEND\nc1\nc2\n")  # c is still open when the batch is sealed
    key = Ed25519PrivateKey.generate()
    pipeline, worker = make_pipeline(tmp_path / "spool", log, grouped_family, key, max_events=100)
    pipeline.pump(RECEIVED, 0.0)
    pipeline.seal()  # as the linger timer would
    worker.drain()
    record_state, _ = decode_record((tmp_path / "spool" / "s" / "0000000000000001.batch").read_bytes())
    assert [h.line.line for h in record_state.held] == [b"c1", b"c2"]
    assert next(iter(record_state.positions.values())).offset == log.stat().st_size
    worker.close()
    pipeline.close()  # the agent dies here: c1 and c2 were read but are in no batch

    with log.open("ab") as f:
        f.write(b"END\nd1\nEND\n")
    resumed, worker = make_pipeline(tmp_path / "spool", log, grouped_family, key, max_events=1000)
    resumed.pump(RECEIVED, 0.0)
    resumed.seal()
    worker.drain()
    worker.close()
    resumed.close()
    assert spooled_originals(tmp_path / "spool") == ["a1\na2\nEND", "b1\nEND", "c1\nc2\nEND", "d1\nEND"]


def test_positions_spooled_mid_chunk_stop_after_the_last_batched_line(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    lines = [f"Nov 26 10:00:00 h sshd[1]: line {i}".encode() for i in range(5)]
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    pipeline, worker = make_pipeline(tmp_path / "spool", log, "syslog", Ed25519PrivateKey.generate(), max_events=2)
    pipeline.pump(RECEIVED, 0.0)
    worker.drain()
    first, _ = decode_record((tmp_path / "spool" / "s" / "0000000000000001.batch").read_bytes())
    assert next(iter(first.positions.values())).offset == len(lines[0]) + len(lines[1]) + 2
    worker.close()
    pipeline.close()


def test_a_corrupt_spooled_batch_is_replaced_by_a_gap_and_later_batches_are_sealed_again(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    lines = [f"Nov 26 10:00:00 h sshd[1]: line {i}".encode() for i in range(9)]
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    key = Ed25519PrivateKey.generate()
    pipeline, worker = make_pipeline(tmp_path / "spool", log, "syslog", key, max_events=3)
    pipeline.pump(RECEIVED, 0.0)
    worker.drain()
    worker.close()
    pipeline.close()
    second = tmp_path / "spool" / "s" / "0000000000000002.batch"
    damaged = bytearray(second.read_bytes())
    damaged[-50] ^= 0xFF
    second.write_bytes(bytes(damaged))

    resumed, worker = make_pipeline(tmp_path / "spool", log, "syslog", key, max_events=1000)
    worker.drain()
    worker.close()
    resumed.close()
    assert (tmp_path / "spool" / "quarantine" / "s-0000000000000002.batch").exists()
    batches = []
    head = None
    for path in sorted((tmp_path / "spool" / "s").glob("*.batch")):
        _, raw = decode_record(path.read_bytes())
        batch = batch_from_bytes(raw)
        if head is not None:
            assert batch.header.prev_hash == head  # one unbroken chain again
        head = batch.batch_hash
        batches.append([e for e in decode_events(open_payload(batch).body or b"")])
    assert [b[0]["event"].get("original") for b in batches[:1]] == [lines[0].decode()]
    gap = batches[1][0]
    assert gap["event"]["dataset"] == "logseal.gap" and "batch 2" in gap["logseal"]["gap"]["reason"]
    assert [e["event"]["original"] for e in batches[1][1:]] == [line.decode() for line in lines[6:9]]
    assert len(batches) == 2  # batch 1 as it was; batch 2 = the gap and the events of the old batch 3
