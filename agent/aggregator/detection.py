"""Running detection on the verified stream, off the ingest path, and routing its alerts.

Batches are queued after they are stored (so detection never delays an ack) and handed to a
detection worker *process*, which decodes them, runs every loaded Sigma rule and, when `baselines`
is given, the anomaly baselines, and sends back the alerts. Being its own process, it has its own
interpreter lock and its own core: the aggregator's ingest (verify, store, fsync, index) and
detection run in parallel instead of taking turns. The alerts come back in batch order and are
submitted to an `AlertRouter` (`agent.aggregator.alert_outputs`): appended to the durable outbox
`STORE/alerts/outbox/` and fsynced, then delivered by the router's own thread to `alerts_file`
(always, every level, no suppression: the local record) and to every configured
`[[alert_output]]`. An output outage delays its alerts, never loses them.

The correlation state (`STORE/detect.state`) and the baseline state (`STORE/baseline.state`) are
restored into the worker at start and returned by it at shutdown, after the last queued batch, and
saved atomically, so a restart neither forgets an open window or a learned habit nor emits an alert
twice. The worker ends when the aggregator closes it, or by itself when the aggregator is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent.aggregator.alert_outputs import AlertOutputConfig, AlertRouter, atomic_write, build_router
from agent.detect import Alert, Detector, gc_policy
from agent.detect.baseline import AnomalyDetector, BaselineConfig
from agent.seal import decode_events

log = logging.getLogger(__name__)

STATE_FILE = "detect.state"
BASELINE_STATE_FILE = "baseline.state"
ROUTER_DIR = "alerts"
ALERTS_FILE_OUTPUT = "alerts_file"
"""Name of the built-in file output (its cursor and dead-letter file in STORE/alerts/)."""


@dataclass
class DetectionStats:
    events: int = 0
    alerts: int = 0
    alerts_by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # the last 1000 alerts


class DetectionShell:
    def __init__(self, specs: list[str], store_dir: Path, alerts_file: Path | None,
                 outputs: Sequence[AlertOutputConfig] = (), baselines: BaselineConfig | None = None,
                 hostname: str | None = None) -> None:
        # Called with (rule id, seconds from the event's time to the alert) for each alert (metrics).
        self.latency_observers: list[Callable[[str, float], None]] = []
        Detector.load(specs)  # a bad rule stops the aggregator at start, with its one-line error
        if baselines is not None:
            AnomalyDetector(baselines)  # likewise a bad baseline setting
        self.state_path = store_dir / STATE_FILE
        self.baseline_path = store_dir / BASELINE_STATE_FILE
        state = self.state_path.read_bytes() if self.state_path.exists() else None
        baseline_state = self.baseline_path.read_bytes() if baselines and self.baseline_path.exists() else None
        self.baselines = baselines
        self.alerts_path = alerts_file or store_dir / "alerts.jsonl"
        local = AlertOutputConfig(type="file", path=self.alerts_path, name=ALERTS_FILE_OUTPUT)
        self.router: AlertRouter = build_router([local, *outputs], store_dir / ROUTER_DIR, hostname)
        self.router.start()
        self.stats = DetectionStats()
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC threads
        worker_inbox, self._to_worker = ctx.Pipe(duplex=False)
        self._from_worker, worker_outbox = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=detection_worker, name="logseal-detect", daemon=True,
                                    args=(worker_inbox, worker_outbox, specs, state, baselines, baseline_state))
        self._process.start()
        worker_inbox.close()
        worker_outbox.close()
        self._states: tuple[bytes, bytes | None] | None = None
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=256)
        self._sender = threading.Thread(target=self._send, name="logseal-detect-send", daemon=True)
        self._receiver = threading.Thread(target=self._receive, name="logseal-detect-receive", daemon=True)
        self._sender.start()
        self._receiver.start()

    def submit_body(self, body: bytes) -> None:
        """The decompressed payload of a stored batch (decoded by the worker)."""
        self._queue.put(("body", body))

    def submit_event(self, event: dict[str, Any]) -> None:
        """An event the aggregator makes itself (security events: rejections, chain breaks)."""
        self._queue.put(("event", event))

    def close(self) -> None:
        """Finish every queued batch, route its alerts, save the worker's state, stop."""
        self._queue.put(None)
        self._sender.join(timeout=30)
        self._receiver.join(timeout=30)
        self._process.join(timeout=10)
        if self._process.is_alive():
            log.error("detection worker did not stop; ending it", extra={"pid": self._process.pid})
            self._process.terminate()
            self._process.join(timeout=5)
        self.router.close()
        if self._states is None:
            log.error("detection worker ended without its state; keeping the saved state",
                      extra={"path": str(self.state_path)})
            return
        detect_state, baseline_state = self._states
        atomic_write(self.state_path, detect_state)
        if baseline_state is not None:
            atomic_write(self.baseline_path, baseline_state)

    def _send(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._to_worker.send(("close", None) if item is None else item)
            except (OSError, ValueError) as exc:
                log.error("detection worker unreachable; batch not evaluated", extra={"reason": str(exc)})
            if item is None:
                self._to_worker.close()
                return

    def _receive(self) -> None:
        while True:
            try:
                kind, *values = self._from_worker.recv()
            except (EOFError, OSError):
                log.error("detection worker stopped")
                return
            if kind == "alerts":
                events, found = values
                self.stats.events += events
                if found:
                    self.router.submit(found)
                    for alert in found:
                        self._count(alert)
            elif kind == "log":
                log.error("detection worker reported a problem", extra={"reason": values[0]})
            elif kind == "state":
                self._states = (values[0], values[1])
                return

    def _count(self, alert: Alert) -> None:
        self.stats.alerts += 1
        key = (alert.rule_id, alert.level)
        self.stats.alerts_by_rule[key] = self.stats.alerts_by_rule.get(key, 0) + 1
        from agent.aggregator.index_rows import timestamp_ns

        ns = timestamp_ns(alert.last_time)
        if ns:
            latency = time.time() - ns / 1e9
            self.stats.latency_s.append(latency)
            for observe in self.latency_observers:
                observe(alert.rule_id, latency)


def detection_worker(inbox: Connection, outbox: Connection, specs: list[str], state: bytes | None,
                     baselines: BaselineConfig | None, baseline_state: bytes | None) -> None:
    """The detection process: ("body", bytes) or ("event", dict) in, ("alerts", events, [Alert]) out,
    in order; ("close", None) answers ("state", detector snapshot, baseline snapshot) and ends."""
    detector = Detector.load(specs)
    anomaly = AnomalyDetector(baselines) if baselines is not None else None
    for blob, restore, what in ((state, detector.restore, "detection"),
                                (baseline_state, anomaly.restore if anomaly else None, "baseline")):
        if blob is not None and restore is not None:
            try:
                restore(blob)
            except ValueError as exc:
                outbox.send(("log", f"{what} state unreadable; starting empty: {exc}"))
    gc_policy.for_streaming()
    while True:
        try:
            kind, value = inbox.recv()
        except (EOFError, OSError):  # the aggregator is gone
            return
        if kind == "close":
            outbox.send(("state", detector.snapshot(), anomaly.snapshot() if anomaly is not None else None))
            return
        try:
            events = decode_events(value) if kind == "body" else [value]
            found: list[Alert] = []
            for event in events:
                found.extend(detector.process(event))
                if anomaly is not None:
                    found.extend(anomaly.process(event))
        except Exception:  # never let one bad batch stop detection
            outbox.send(("log", "detection failed on a batch; going on\n" + traceback.format_exc()))
            continue
        outbox.send(("alerts", len(events), found))
