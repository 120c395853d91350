"""One stream's path on the node: tail -> normalize -> batch -> seal -> spool.

The pipeline is driven by its caller (`pump`, `seal_due`), so the agent process, the benchmark
and the tests run exactly the same code. Every line handed out by the tailer goes into the open
batch before the next read, so the positions spooled with a batch cover exactly its lines.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from agent.config import BatchConfig, SourceConfig, TailConfig, stream_name
from agent.normalize import LineNormalizer, SourceContext, normalizer_for
from agent.normalize.common import Event, format_timestamp
from agent.seal import ChainHead, SealedBatch, Sealer
from agent.spool import Spool
from agent.tail import Line, Tailer
from agent.wire import batch_to_bytes


@dataclass
class PipelineStats:
    lines: int = 0
    line_bytes: int = 0
    batches: int = 0
    batch_bytes: int = 0
    events_sealed: int = 0


def received_now() -> str:
    return format_timestamp(dt.datetime.now(dt.UTC))


class StreamPipeline:
    def __init__(self, source: SourceConfig, host_name: str, sealer: Sealer, spool: Spool,
                 batch: BatchConfig, tail: TailConfig) -> None:
        self.name = stream_name(source)
        self.source = source
        self.host_name = host_name
        self.sealer = sealer
        self.spool = spool
        self.batch_config = batch
        state = spool.recover(self.name)
        self.head = state.head
        self.tailer = Tailer(source.paths, state.positions, tail.read_chunk_bytes)
        self.stats = PipelineStats()
        self._normalizers: dict[str, tuple[str, LineNormalizer]] = {}
        self._events: list[Event] = []
        self._bytes = 0
        self._opened_at = 0.0

    def _normalizer(self, line: Line) -> LineNormalizer:
        cached = self._normalizers.get(line.key)
        if cached is None or cached[0] != line.path:
            ctx = SourceContext(host_name=self.host_name, path=line.path, keep_original=self.source.keep_original)
            cached = (line.path, normalizer_for(self.source.type, ctx))
            self._normalizers[line.key] = cached
        return cached[1]

    def scan(self) -> None:
        self.tailer.scan()

    def pump(self, received: str, now: float) -> int:
        """Read what is new (one chunk per file), batching and sealing as limits are hit."""
        count = 0
        max_events = self.batch_config.max_events
        max_bytes = self.batch_config.max_bytes
        events = self._events
        for line in self.tailer.read():
            if not events:
                self._opened_at = now
            event = self._normalizer(line)(line.data, line.offset, received)
            if line.continues:
                event.setdefault("logseal", {})["line_continues"] = True
            events.append(event)
            self._bytes += len(line.data)
            count += 1
            self.stats.line_bytes += len(line.data) + 1
            if len(events) >= max_events or self._bytes >= max_bytes:
                self.seal()
                events = self._events
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

    def seal(self) -> SealedBatch | None:
        """Seal and durably spool the open batch (with the positions it covers)."""
        if not self._events:
            return None
        sealed = self.sealer.seal(self.name, self.head, self._events)
        data = batch_to_bytes(sealed)
        # The tailer's cursors stand exactly after the last line handed out, i.e. in this batch.
        self.spool.append(self.name, sealed.header.seq, sealed.batch_hash, self.tailer.positions(), data)
        self.head = ChainHead(sealed.header.seq, sealed.batch_hash)
        self.stats.batches += 1
        self.stats.batch_bytes += len(data)
        self.stats.events_sealed += len(self._events)
        self._events = []
        self._bytes = 0
        return sealed

    def close(self) -> None:
        self.tailer.close()


def monotonic() -> float:
    return time.monotonic()
