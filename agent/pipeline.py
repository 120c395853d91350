"""One stream's path on the node: tail -> normalize -> batch -> seal -> spool.

The pipeline is driven by its caller (`pump`, `seal_due`), so the agent process, the benchmark
and the tests run exactly the same code. Encoding happens on the caller's thread; compression,
chaining, signing and the spool write on the `SealWorker` thread, strictly in submission order.
The positions handed over with a batch stand exactly after its last line.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass

from agent.config import DEFAULT_JOURNALCTL, BatchConfig, SourceConfig, TailConfig, stream_name
from agent.epochs import EpochKeeper
from agent.errors import SealError
from agent.journal import JournalReader
from agent.normalize import Assembler, NormalizeOptions, SourceContext, assembler_for
from agent.normalize.common import Event, format_timestamp
from agent.seal import ChainHead, EncodedBatch, SealedBatch, Sealer, decode_events, open_payload
from agent.spool import HeldRecord, Spool, SpoolStopped, StreamState
from agent.tail import Gap, Position, Tailer
from agent.wire import batch_from_bytes, batch_to_bytes

log = logging.getLogger(__name__)


@dataclass
class PipelineStats:
    heartbeats: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    unparsed: int = 0
    lines: int = 0
    line_bytes: int = 0
    batches: int = 0
    events_sealed: int = 0


@dataclass(frozen=True, slots=True)
class _SealJob:
    encoded: EncodedBatch
    positions: dict[str, Position]
    held: list[HeldRecord]


class SealWorker:
    """Compresses, chains, signs and spools encoded batches on its own thread, in order.

    zstd, SHA-256, Ed25519 and fsync release the GIL, so this work overlaps with reading and
    normalizing the next batch. The queue is short: when sealing falls behind, reading waits.
    A failure here (e.g. the spool disk) stops the agent loudly instead of losing data.
    """

    def __init__(self, sealer: Sealer, spool: Spool, heads: dict[str, ChainHead], depth: int = 2,
                 epochs: EpochKeeper | None = None) -> None:
        self.sealer = sealer
        self.epochs = epochs
        self.spool = spool
        self.heads = heads
        self.batch_bytes = 0
        self._jobs: queue.Queue[_SealJob | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="logseal-sealer", daemon=True)
        self._thread.start()

    def submit(self, encoded: EncodedBatch, positions: dict[str, Position], held: list[HeldRecord]) -> None:
        self.raise_failure()
        self._jobs.put(_SealJob(encoded, positions, held))

    def raise_failure(self) -> None:
        if self._error is not None:
            raise SealError(f"sealing or spooling failed: {self._error}") from self._error

    def drain(self) -> None:
        """Wait until every submitted batch is spooled."""
        self._jobs.join()
        self.raise_failure()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None and not self._abandoned:
                    self._seal(job)
            except SpoolStopped:
                # Stopping with a full spool: this batch and those after it are not spooled; their
                # positions were not recorded either, so their lines are read again at next start.
                self._abandoned = True
                log.warning("spool full at shutdown; the last batches will be rebuilt from the files at start")
            except BaseException as exc:  # noqa: BLE001 - reported to the reading thread
                log.error("sealing failed; the agent stops reading", extra={"reason": str(exc)})
                self._error = exc
            finally:
                self._jobs.task_done()

    def _seal(self, job: _SealJob) -> None:
        stream = job.encoded.stream_id
        sealed = self.sealer.seal_encoded(self.heads[stream], job.encoded)
        data = batch_to_bytes(sealed)
        self.spool.append(stream, sealed.header.seq, sealed.batch_hash, job.positions, data, job.held)
        self.heads[stream] = ChainHead(sealed.header.seq, sealed.batch_hash)
        self.batch_bytes += len(data)
        if self.epochs is not None:
            self.epochs.after_seal(self.sealer, self.heads, self._spool_certificate, received_now())

    def _spool_certificate(self, sealed: SealedBatch) -> None:
        data = batch_to_bytes(sealed)
        self.spool.append(sealed.header.stream_id, sealed.header.seq, sealed.batch_hash, {}, data, [])
        self.batch_bytes += len(data)


def gap_event(gap: Gap, host_name: str, received: str) -> Event:
    """A record of lost bytes, sealed into the stream like any event (dataset `logseal.gap`)."""
    return {
        "@timestamp": received,
        "event": {"kind": "event", "category": [], "type": ["info"], "action": "gap", "outcome": "failure",
                  "dataset": "logseal.gap", "reason": gap.reason},
        "host": {"name": host_name},
        "log": {"file": {"path": gap.path}, "offset": gap.start},
        "message": (f"{gap.end - gap.start} bytes of {gap.path} were lost ({gap.start}-{gap.end}): {gap.reason}"
                    if gap.end > gap.start else f"bytes of {gap.path} from {gap.start} on were lost: {gap.reason}"),
        "logseal": {"gap": {"path": gap.path, "start": gap.start, "end": gap.end, "bytes": gap.end - gap.start,
                            "reason": gap.reason}},
    }


def received_now() -> str:
    return format_timestamp(dt.datetime.now(dt.UTC))


class StreamPipeline:
    def __init__(self, source: SourceConfig, host_name: str, sealer: Sealer, spool: Spool,
                 batch: BatchConfig, tail: TailConfig, heads: dict[str, ChainHead], worker: SealWorker,
                 options: NormalizeOptions | None = None, resume: StreamPipeline | None = None) -> None:
        """`resume`: the pipeline this one replaces on a config reload (it was sealed and drained):
        its chain head, positions, held lines and, if its globs are unchanged, its open files."""
        self.name = stream_name(source)
        self.source = source
        self.host_name = host_name
        self.sealer = sealer
        self.worker = worker
        self.spool = spool
        self.batch_config = batch
        self.options = options or NormalizeOptions()
        if resume is not None:
            state = StreamState(heads[self.name], resume.tailer.positions(), resume.held())
        else:
            state = spool.recover(self.name)
        heads[self.name] = state.head
        self.next_seq = state.head.seq + 1
        self.journal: JournalReader | None = None
        self.tailer: Tailer | JournalReader
        if source.type == "journald":
            if resume is not None:
                resume.tailer.close()
            self.journal = JournalReader(source.command or DEFAULT_JOURNALCTL, state.positions, tail.read_chunk_bytes)
            self.tailer = self.journal
        elif resume is not None and isinstance(resume.tailer, Tailer) and resume.source.paths == source.paths:
            self.tailer = resume.tailer  # keeps open files, e.g. rotated ones still being drained
        else:
            if resume is not None:
                resume.tailer.close()
            self.tailer = Tailer(source.paths, state.positions, tail.read_chunk_bytes, tail.max_line_bytes)
        self.stats = PipelineStats()
        self._assemblers: dict[str, tuple[str, Assembler]] = {}
        self._events: list[Event] = []
        self._bytes = 0
        self._opened_at = 0.0
        self.last_sealed_at = time.monotonic()
        if self.journal is None:  # a journal resumes by its cursor: what was held is read again
            self._restore(state.held, received_now())
        if state.broken_seq:
            self._reseal(state, received_now())

    def _assembler(self, key: str, path: str) -> Assembler:
        cached = self._assemblers.get(key)
        if cached is None:
            ctx = SourceContext(host_name=self.host_name, path=path, keep_original=self.source.keep_original)
            cached = (path, assembler_for(self.source.type, ctx, self.options))
            self._assemblers[key] = cached
        return cached[1]

    def _restore(self, held: list[HeldRecord], received: str) -> None:
        """Feed again the lines that were held when the newest spooled batch was written."""
        for record in held:
            self._events.extend(self._assembler(record.key, record.path).feed(
                record.line.line, record.line.offset, record.line.received))
        if held:
            log.info("restored held lines", extra={"stream": self.name, "lines": len(held)})

    def _reseal(self, state: StreamState, received: str) -> None:
        """A spooled batch failed its checksum: seal the batches spooled after it again, after a gap record.

        Without orphans the lost batch's lines are simply read again (its positions were never the
        stream's); with orphans those lines are gone, and the gap record says which batch and files."""
        if not state.orphans:
            log.warning("a spooled batch was corrupt; its lines are read again",
                        extra={"stream": self.name, "seq": state.broken_seq})
            return
        first_state = state.orphans[0][0]
        files = sorted({p.path for p in first_state.positions.values()})
        reason = (f"spool record of batch {state.broken_seq} failed its checksum (quarantined); its lines of "
                  f"{', '.join(files) or 'the stream'} after the previous batch's positions are lost")
        gap = gap_event(Gap(f"{self.name}#{state.broken_seq}", 0, 0, reason), self.host_name, received)
        pending: list[Event] = [gap]
        self.stats.gaps += 1
        for orphan_state, raw in state.orphans:
            batch = batch_from_bytes(raw)
            body = open_payload(batch).body if not batch.payload_dropped else b""
            for event in decode_events(body or b""):
                event.get("event", {}).pop("id", None)
                pending.append(event)
            self.worker.submit(self.sealer.encode(self.name, self.next_seq, pending), orphan_state.positions,
                               orphan_state.held)
            self.next_seq += 1
            pending = []
        log.error("spool record lost; later batches sealed again after a gap record",
                  extra={"stream": self.name, "lost_seq": state.broken_seq, "resealed": len(state.orphans)})

    def held(self) -> list[HeldRecord]:
        if self.journal is not None:
            return []
        return [HeldRecord(key, path, line) for key, (path, assembler) in self._assemblers.items()
                for line in assembler.held()]

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for _, assembler in self._assemblers.values():
            for name, value in assembler.counters().items():
                total[name] = total.get(name, 0) + value
        return total

    def scan(self) -> None:
        self.tailer.scan()

    def pump(self, received: str, now: float) -> int:
        """Read what is new (one chunk per file), batching and sealing as limits are hit."""
        count = 0
        max_events = self.batch_config.max_events
        max_bytes = self.batch_config.max_bytes
        for chunk in self.tailer.read():
            if not self._events:
                self._opened_at = now
            if self.journal is not None and chunk.key not in self._assemblers:
                self._assemblers.clear()  # journalctl restarted: a cut-off entry is read again after the cursor
            feed = self._assembler(chunk.key, chunk.path).feed
            events = self._events
            offset = chunk.offset
            size = self._bytes
            for data in chunk.lines:
                produced = feed(data, offset, received)
                offset += len(data) + 1
                size += len(data)
                if produced:
                    events.extend(produced)
                    if self.journal is not None:
                        self._note_cursor(produced)
                    if len(events) >= max_events or size >= max_bytes:
                        self._bytes = size
                        # Mid-chunk: this file is consumed only up to the end of the line just fed.
                        self.seal(self._within(chunk.key, offset))
                        events = self._events
                        size = 0
                        self._opened_at = now
            self._bytes = size
            if chunk.continues and events:
                events[-1].setdefault("logseal", {})["line_continues"] = True
            count += len(chunk.lines)
            self.stats.line_bytes += offset - chunk.offset
        self.stats.lines += count
        return count

    def _within(self, key: str, offset: int) -> Position | None:
        if isinstance(self.tailer, Tailer):
            return self.tailer.position_at(key, offset)
        return None

    def take_gaps(self, received: str, now: float) -> None:
        """Seal what could not be kept, as gap records in the stream (loss is never silent): bytes the
        tailer could not read, and batches whose payload a full spool dropped."""
        gaps = self.tailer.take_gaps() if isinstance(self.tailer, Tailer) else []
        for dropped in self.spool.take_dropped(self.name):
            gaps.append(Gap(f"{self.name}#{dropped.seq}", 0, dropped.bytes_dropped,
                            f"spool full: payload of batch {dropped.seq} ({dropped.event_count} events) dropped"))
        for gap in gaps:
            if not self._events:
                self._opened_at = now
            self._events.append(gap_event(gap, self.host_name, received))
            self.stats.gaps += 1
            self.stats.gap_bytes += max(0, gap.end - gap.start)

    def flush_due(self, received: str, now: float, force: bool = False) -> None:
        """Take events the assemblers held long enough (all of them when `force`)."""
        for _, assembler in self._assemblers.values():
            produced = assembler.flush(received, force)
            if produced:
                if not self._events:
                    self._opened_at = now
                self._events.extend(produced)
                if self.journal is not None:
                    self._note_cursor(produced)

    def _note_cursor(self, produced: list[Event]) -> None:
        assert self.journal is not None
        for event in reversed(produced):
            cursor = (event.get("journald") or {}).get("cursor")
            if isinstance(cursor, str) and cursor:
                self.journal.cursor = cursor
                return

    def linger_deadline(self) -> float | None:
        if not self._events:
            return None
        return self._opened_at + self.batch_config.linger_ms / 1000

    def seal_due(self, now: float) -> bool:
        deadline = self.linger_deadline()
        if deadline is not None and now >= deadline:
            self.seal()
            return True
        return False

    def heartbeat(self, now: float, every_s: float) -> bool:
        """Seal an empty batch when nothing was sealed for `every_s`: silence and a cut-off tail of the
        stream are then visible at the aggregator (a node that stops sending is noticed)."""
        if every_s <= 0 or self._events or now - self.last_sealed_at < every_s:
            return False
        self.worker.submit(self.sealer.encode(self.name, self.next_seq, []), self.tailer.positions(), self.held())
        self.next_seq += 1
        self.last_sealed_at = now
        self.stats.heartbeats += 1
        return True

    def seal(self, within: Position | None = None) -> None:
        """Encode the open batch and hand it to the seal worker with what resuming needs: the positions
        it covers and the lines the assemblers hold.

        `within` is the position of the file being read when the batch ends inside a chunk.
        """
        if not self._events:
            return
        self.stats.unparsed += sum(1 for e in self._events if e["event"].get("action") == "unparsed")
        self.last_sealed_at = time.monotonic()
        encoded = self.sealer.encode(self.name, self.next_seq, self._events)
        positions = self.tailer.positions()
        if within is not None:
            positions[within.key] = within
        self.worker.submit(encoded, positions, self.held())
        self.next_seq += 1
        self.stats.batches += 1
        self.stats.events_sealed += encoded.event_count
        self._events = []
        self._bytes = 0

    def close(self) -> None:
        self.tailer.close()


def monotonic() -> float:
    return time.monotonic()
