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

from agent.config import BatchConfig, SourceConfig, TailConfig, stream_name
from agent.errors import SealError
from agent.normalize import LineNormalizer, SourceContext, normalizer_for
from agent.normalize.common import Event, format_timestamp
from agent.seal import ChainHead, EncodedBatch, Sealer
from agent.spool import Spool
from agent.tail import Chunk, Position, Tailer
from agent.wire import batch_to_bytes

log = logging.getLogger(__name__)


@dataclass
class PipelineStats:
    lines: int = 0
    line_bytes: int = 0
    batches: int = 0
    events_sealed: int = 0


@dataclass(frozen=True, slots=True)
class _SealJob:
    encoded: EncodedBatch
    positions: dict[str, Position]


class SealWorker:
    """Compresses, chains, signs and spools encoded batches on its own thread, in order.

    zstd, SHA-256, Ed25519 and fsync release the GIL, so this work overlaps with reading and
    normalizing the next batch. The queue is short: when sealing falls behind, reading waits.
    A failure here (e.g. the spool disk) stops the agent loudly instead of losing data.
    """

    def __init__(self, sealer: Sealer, spool: Spool, heads: dict[str, ChainHead], depth: int = 2) -> None:
        self.sealer = sealer
        self.spool = spool
        self.heads = heads
        self.batch_bytes = 0
        self._jobs: queue.Queue[_SealJob | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="logseal-sealer", daemon=True)
        self._thread.start()

    def submit(self, encoded: EncodedBatch, positions: dict[str, Position]) -> None:
        self.raise_failure()
        self._jobs.put(_SealJob(encoded, positions))

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
                if self._error is None:
                    self._seal(job)
            except BaseException as exc:  # noqa: BLE001 - reported to the reading thread
                log.error("sealing failed; the agent stops reading reason=%s", exc)
                self._error = exc
            finally:
                self._jobs.task_done()

    def _seal(self, job: _SealJob) -> None:
        stream = job.encoded.stream_id
        sealed = self.sealer.seal_encoded(self.heads[stream], job.encoded)
        data = batch_to_bytes(sealed)
        self.spool.append(stream, sealed.header.seq, sealed.batch_hash, job.positions, data)
        self.heads[stream] = ChainHead(sealed.header.seq, sealed.batch_hash)
        self.batch_bytes += len(data)


def received_now() -> str:
    return format_timestamp(dt.datetime.now(dt.UTC))


class StreamPipeline:
    def __init__(self, source: SourceConfig, host_name: str, sealer: Sealer, spool: Spool,
                 batch: BatchConfig, tail: TailConfig, heads: dict[str, ChainHead], worker: SealWorker) -> None:
        self.name = stream_name(source)
        self.source = source
        self.host_name = host_name
        self.sealer = sealer
        self.worker = worker
        self.batch_config = batch
        state = spool.recover(self.name)
        heads[self.name] = state.head
        self.next_seq = state.head.seq + 1
        self.tailer = Tailer(source.paths, state.positions, tail.read_chunk_bytes)
        self.stats = PipelineStats()
        self._normalizers: dict[str, tuple[str, LineNormalizer]] = {}
        self._events: list[Event] = []
        self._bytes = 0
        self._opened_at = 0.0

    def _normalizer(self, chunk: Chunk) -> LineNormalizer:
        cached = self._normalizers.get(chunk.key)
        if cached is None or cached[0] != chunk.path:
            ctx = SourceContext(host_name=self.host_name, path=chunk.path, keep_original=self.source.keep_original)
            cached = (chunk.path, normalizer_for(self.source.type, ctx))
            self._normalizers[chunk.key] = cached
        return cached[1]

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
            normalize = self._normalizer(chunk)
            events = self._events
            offset = chunk.offset
            size = self._bytes
            for data in chunk.lines:
                events.append(normalize(data, offset, received))
                offset += len(data) + 1
                size += len(data)
                if len(events) >= max_events or size >= max_bytes:
                    self._bytes = size
                    # Mid-chunk: this file is consumed only up to the end of the line just batched.
                    self.seal(Position(chunk.path, chunk.dev, chunk.ino, offset))
                    events = self._events
                    size = 0
                    self._opened_at = now
            self._bytes = size
            if chunk.continues:
                events[-1].setdefault("logseal", {})["line_continues"] = True
            count += len(chunk.lines)
            self.stats.line_bytes += offset - chunk.offset
        self.stats.lines += count
        return count

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

    def seal(self, within: Position | None = None) -> None:
        """Encode the open batch and hand it, with the positions it covers, to the seal worker.

        `within` is the position of the file being read when the batch ends inside a chunk.
        """
        if not self._events:
            return
        encoded = self.sealer.encode(self.name, self.next_seq, self._events)
        positions = self.tailer.positions()
        if within is not None:
            positions[within.key] = within
        self.worker.submit(encoded, positions)
        self.next_seq += 1
        self.stats.batches += 1
        self.stats.events_sealed += encoded.event_count
        self._events = []
        self._bytes = 0

    def close(self) -> None:
        self.tailer.close()


def monotonic() -> float:
    return time.monotonic()
