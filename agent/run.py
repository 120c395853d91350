"""The agent process: streams pumped on the main thread, the shipper on its own thread.

SIGTERM/SIGINT: stop reading, seal and spool the open batches, wait up to
`ship.shutdown_grace_ms` for their acks, exit 0. What is not acked stays spooled for next start.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from agent.config import AgentConfig
from agent.keys import load_private_key
from agent.pipeline import SealWorker, StreamPipeline, monotonic, received_now
from agent.seal import ChainHead, Sealer
from agent.ship import Shipper
from agent.source_options import normalize_options, redaction_secret
from agent.spool import Spool
from agent.watch import ChangeWatcher

log = logging.getLogger(__name__)

_RESCAN_INTERVAL_S = 1.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        node_key = load_private_key(config.key)
        self.sealer = Sealer(config.node_id, node_key, config.batch.zstd_level)
        secret = redaction_secret(config, node_key)
        self.spool = Spool(config.spool_dir, config.spool.max_bytes, config.spool.when_full)
        heads: dict[str, ChainHead] = {}
        self.seal_worker = SealWorker(self.sealer, self.spool, heads)
        self.streams = [
            StreamPipeline(source, config.node_id, self.sealer, self.spool, config.batch, config.tail, heads,
                           self.seal_worker, normalize_options(source, secret))
            for source in config.source
        ]
        self.shipper = Shipper(config.aggregator, self.spool, config.ship, config.tls)
        self.stopping = threading.Event()
        # Set by file-change notifications and by stop requests; the loop sleeps on it when idle.
        self.wake = threading.Event()
        self.watcher = ChangeWatcher([p for source in config.source for p in source.paths], self.wake)

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        log.info("agent starting node_id=%s aggregator=%s streams=%s pending_batches=%d",
                 self.config.node_id, self.config.aggregator, ",".join(s.name for s in self.streams),
                 self.spool.pending_count())
        self.shipper.start()
        self.watcher.start()
        poll_s = self.config.tail.poll_interval_ms / 1000
        next_scan = 0.0
        while not self.stopping.is_set():
            now = monotonic()
            if now >= next_scan or self.watcher.rescan.is_set():
                self.watcher.rescan.clear()
                for stream in self.streams:
                    stream.scan()
                next_scan = now + _RESCAN_INTERVAL_S
            received = received_now()
            worked = 0
            for stream in self.streams:
                worked += stream.pump(received, now)
            now = monotonic()
            for stream in self.streams:
                stream.take_gaps(received, now)
                stream.flush_due(received, now)
                stream.seal_due(now)
            if not worked:
                deadlines = [d for d in (s.linger_deadline() for s in self.streams) if d is not None]
                wait = min([poll_s, *[max(0.0, d - now) for d in deadlines]])
                self.wake.wait(wait)
                self.wake.clear()
        return self._shutdown()

    def _shutdown(self) -> int:
        self.watcher.stop()
        # A batch that cannot be spooled now (spool full) is abandoned: its lines are read again at start.
        self.spool.stop_waiting()
        received = received_now()
        for stream in self.streams:
            # Held lines are kept with the last batch and fed again at next start; only what is
            # due by the assembler's own rule is released now.
            stream.flush_due(received, monotonic())
            stream.seal()
            stream.close()
            if stream.counters():
                log.info("stream counters stream=%s %s", stream.name,
                         " ".join(f"{k}={v}" for k, v in sorted(stream.counters().items())))
        self.seal_worker.drain()
        self.seal_worker.close()
        grace = self.config.ship.shutdown_grace_ms / 1000
        drained = self.spool.wait_empty(grace)
        self.shipper.stop()
        self.shipper.join(timeout=5)
        log.info("agent stopped pending_batches=%d drained=%s stored=%d duplicate=%d rejected=%d",
                 self.spool.pending_count(), drained, self.shipper.stats.stored,
                 self.shipper.stats.duplicate, self.shipper.stats.rejected)
        return 0


def run_agent(config: AgentConfig) -> int:
    agent = Agent(config)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    return agent.run()
