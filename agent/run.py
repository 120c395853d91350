"""The agent process: streams pumped on the main thread, sealing and shipping on their own threads.

SIGTERM/SIGINT: stop reading, seal and spool the open batches, wait up to
`ship.shutdown_grace_ms` for their acks, exit 0. What is not acked stays spooled for next start.
SIGHUP: read the config file again and apply it without losing position; with [tls], the client
certificate files are read again too (a new channel) (a config that does not
load is refused with one logged line and the running config stays). The node id, key and spool
folder cannot change without a restart.

The agent writes `status.json` into its spool folder every few seconds and at shutdown
(`logseal agent --status` prints it), and serves Prometheus metrics, /healthz and /readyz when
`[metrics] listen` is set.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from agent.config import AgentConfig, SourceConfig, load_agent_config
from agent.epochs import EpochKeeper
from agent.errors import ConfigError
from agent.keychain import KEYS_STREAM
from agent.keys import load_public_key
from agent.metrics import MetricsServer, Readiness, Registry, register_process_metrics
from agent.pipeline import SealWorker, StreamPipeline, monotonic, received_now
from agent.seal import ChainHead
from agent.ship import Shipper
from agent.source_options import normalize_options, redaction_secret
from agent.spool import Spool
from agent.status import agent_status, register_agent_metrics, write_status
from agent.watch import ChangeWatcher
from agent.witness import Alarm, Witness

log = logging.getLogger(__name__)

_RESCAN_INTERVAL_S = 1.0
ALARM_STREAM = "logseal-alarm"
_STATUS_INTERVAL_S = 2.0


class Agent:
    def __init__(self, config: AgentConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.epochs = EpochKeeper(config.spool_dir, config.key, config.keys.epoch_s, config.keys.epoch_batches)
        self.spool = Spool(config.spool_dir, config.spool.max_bytes, config.spool.when_full)
        # The keys stream is recovered first, so after a restart its certifying batches are sent before
        # the batches signed at the epochs they certify.
        keys_head = self.spool.recover(KEYS_STREAM).head
        self.epochs.recover(keys_head)
        self.sealer = self.epochs.sealer(config.node_id, config.batch.zstd_level)
        self.secret = (redaction_secret(config, self.epochs.key) if config.redact_key is not None
                       else self.epochs.derived_secret(lambda key: redaction_secret(config, key)))
        self.heads: dict[str, ChainHead] = {KEYS_STREAM: keys_head}
        self.seal_worker = SealWorker(self.sealer, self.spool, self.heads, epochs=self.epochs)
        log.info("node key", extra={"epoch": self.epochs.epoch, "boot_counter": self.epochs.boot_counter})
        self.streams = [self._stream(source) for source in config.source]
        self.alarms: list[Alarm] = []
        self._alarm_lock = threading.Lock()
        alarm_head = self.spool.recover(ALARM_STREAM).head
        self.heads[ALARM_STREAM] = alarm_head
        self.alarm_next_seq = alarm_head.seq + 1
        self.shipper = self._shipper(config)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.reloads: dict[str, int] = {"ok": 0, "failed": 0}
        # Set by file-change notifications, stop and reload requests; the loop sleeps on it when idle.
        self.wake = threading.Event()
        self.watcher = ChangeWatcher([p for source in config.source for p in source.paths], self.wake)
        self.metrics: MetricsServer | None = None

    def _stream(self, source: SourceConfig, resume: StreamPipeline | None = None) -> StreamPipeline:
        return StreamPipeline(source, self.config.node_id, self.sealer, self.spool, self.config.batch,
                              self.config.tail, self.heads, self.seal_worker, normalize_options(source, self.secret),
                              resume=resume)

    def _shipper(self, config: AgentConfig) -> Shipper:
        shipper = Shipper(config.aggregator, self.spool, config.ship, config.tls)
        pub = load_public_key(config.aggregator_pub) if config.aggregator_pub is not None else None
        self.witness = Witness(config.spool_dir, pub, shipper.prove_consistency, self._raise_alarm)
        shipper.on_checkpoint = self.witness.observe
        shipper.enrolled_key = self.epochs.enrolled_public
        return shipper

    def _raise_alarm(self, alarm: Alarm) -> None:
        with self._alarm_lock:
            self.alarms.append(alarm)
        self.wake.set()

    def _seal_alarms(self, received: str) -> None:
        """Seal witness alarms as events of their own stream (shipped like any batch)."""
        with self._alarm_lock:
            alarms, self.alarms = self.alarms, []
        if not alarms:
            return
        events = [{"@timestamp": received,
                   "event": {"kind": "alert", "category": ["configuration"], "type": ["info"],
                             "action": "checkpoint_inconsistent", "outcome": "failure", "dataset": "logseal.alarm"},
                   "host": {"name": self.config.node_id},
                   "message": f"the aggregator's log is not consistent with what this node saw: {a.reason}",
                   "logseal": {"alarm": {"verdict": a.verdict.name, "older": a.older, "newer": a.newer}}}
                  for a in alarms]
        self.seal_worker.submit(self.sealer.encode(ALARM_STREAM, self.alarm_next_seq, events), {}, [])
        self.alarm_next_seq += 1

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.stopping.set()
        self.wake.set()

    def request_reload(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.reload_requested.set()
        self.wake.set()

    def readiness(self) -> Readiness:
        if self.shipper.stats.connected or self.spool.bytes_used < self.spool.max_bytes:
            return Readiness.ok()
        return Readiness.not_ready("not connected to the aggregator and the spool is full")

    def _start_metrics(self) -> None:
        if not self.config.metrics.listen:
            return
        registry = Registry()
        register_process_metrics(registry, version="0.1.0", component="agent")
        register_agent_metrics(registry, self)
        self.metrics = MetricsServer(registry, self.config.metrics.listen, ready=self.readiness)
        self.metrics.start()
        log.info("metrics serving", extra={"address": self.config.metrics.listen, "port": self.metrics.port})

    def run(self) -> int:
        log.info("agent starting", extra={"node_id": self.config.node_id, "aggregator": self.config.aggregator,
                                          "streams": [s.name for s in self.streams],
                                          "pending_batches": self.spool.pending_count()})
        self._start_metrics()
        self.shipper.start()
        self.watcher.start()
        next_scan = next_status = 0.0
        while not self.stopping.is_set():
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
                next_scan = 0.0
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
                stream.heartbeat(now, self.config.heartbeat_s)
            if self.alarms:
                self._seal_alarms(received)
            if now >= next_status:
                write_status(self.config.spool_dir, agent_status(self))
                next_status = now + _STATUS_INTERVAL_S
            if not worked:
                deadlines = [d for d in (s.linger_deadline() for s in self.streams) if d is not None]
                wait = min([self.config.tail.poll_interval_ms / 1000, *[max(0.0, d - now) for d in deadlines]])
                self.wake.wait(wait)
                self.wake.clear()
        return self._shutdown()

    def reload(self) -> None:
        """Apply the config file again; positions, chain heads and held lines carry over."""
        if self.config_path is None:
            return
        try:
            new = load_agent_config(self.config_path)
            for name in ("node_id", "key", "spool_dir"):
                if getattr(new, name) != getattr(self.config, name):
                    raise ConfigError(f"{name} cannot change on reload; restart the agent to change it")
            for source in new.source:
                normalize_options(source, self.secret)  # a policy file that does not load refuses the reload
        except ConfigError as exc:
            self.reloads["failed"] += 1
            log.error("config reload refused; the running config stays", extra={"reason": str(exc)})
            return
        received, now = received_now(), monotonic()
        for stream in self.streams:
            stream.take_gaps(received, now)
            stream.seal()
        self.seal_worker.drain()
        old = {stream.name: stream for stream in self.streams}
        old_config = self.config
        self.config = new
        self.epochs.epoch_s, self.epochs.epoch_batches = new.keys.epoch_s, new.keys.epoch_batches
        self.streams = []
        for source in new.source:
            self.streams.append(self._stream(source, resume=old.pop(source.name or source.type, None)))
        for gone in old.values():
            gone.close()  # its positions stay in the spool's checkpoint for a later return
        if new.tls is not None or (new.aggregator, new.tls, new.ship, new.aggregator_pub) != (
                old_config.aggregator, old_config.tls, old_config.ship, old_config.aggregator_pub):
            self.shipper.stop()
            self.shipper.join(timeout=10)
            self.shipper = self._shipper(new)
            self.shipper.start()
        self.watcher.stop()
        self.watcher = ChangeWatcher([p for source in new.source for p in source.paths], self.wake)
        self.watcher.start()
        self.reloads["ok"] += 1
        log.info("config reloaded", extra={"streams": [s.name for s in self.streams], "aggregator": new.aggregator})

    def _shutdown(self) -> int:
        self.watcher.stop()
        # A batch that cannot be spooled now (spool full) is abandoned: its lines are read again at start.
        self.spool.stop_waiting()
        received, now = received_now(), monotonic()
        for stream in self.streams:
            # Held lines are kept with the last batch and fed again at next start; only what is
            # due by the assembler's own rule is released now.
            stream.take_gaps(received, now)
            stream.flush_due(received, now)
            stream.seal()
        self.seal_worker.drain()
        self.seal_worker.close()
        grace = self.config.ship.shutdown_grace_ms / 1000
        drained = self.spool.wait_empty(grace)
        self.shipper.stop()
        self.shipper.join(timeout=5)
        status = agent_status(self)
        write_status(self.config.spool_dir, status)
        for stream in self.streams:
            stream.close()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("agent stopped", extra={"pending_batches": self.spool.pending_count(), "drained": drained,
                                         "stored": self.shipper.stats.stored,
                                         "duplicate": self.shipper.stats.duplicate,
                                         "rejected": self.shipper.stats.rejected})
        for stream in status["streams"]:
            if stream["counters"]:
                log.info("stream counters", extra={"stream": stream["name"],
                                                   "counters": dict(sorted(stream["counters"].items()))})
        return 0


def run_agent(config: AgentConfig, config_path: Path | None = None) -> int:
    agent = Agent(config, config_path)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    signal.signal(signal.SIGHUP, agent.request_reload)
    return agent.run()
