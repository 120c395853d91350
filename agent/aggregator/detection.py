"""Running detection on the verified stream, off the ingest path, and routing its alerts.

Batches are queued after they are stored (so detection never delays an ack); a worker thread
decodes them, runs every loaded Sigma rule and, when `baselines` is given, the anomaly baselines,
and submits the alerts to an `AlertRouter` (`agent.aggregator.alert_outputs`): appended to the
durable outbox `STORE/alerts/outbox/` and fsynced, then delivered by the router's own thread to
`alerts_file` (always, every level, no suppression: the local record) and to every configured
`[[alert_output]]`. An output outage delays its alerts, never loses them.

The correlation state (`STORE/detect.state`) and the baseline state (`STORE/baseline.state`) are
saved atomically at shutdown and restored at start, so a restart neither forgets an open window or
a learned habit nor emits an alert twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.aggregator.alert_outputs import AlertOutputConfig, AlertRouter, atomic_write, build_router
from agent.detect import Alert, Detector
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
        self.detector = Detector.load(specs)
        self.state_path = store_dir / STATE_FILE
        self._restore(self.state_path, self.detector.restore, "detection")
        self.anomaly = AnomalyDetector(baselines) if baselines is not None else None
        self.baseline_path = store_dir / BASELINE_STATE_FILE
        if self.anomaly is not None:
            self._restore(self.baseline_path, self.anomaly.restore, "baseline")
        self.alerts_path = alerts_file or store_dir / "alerts.jsonl"
        local = AlertOutputConfig(type="file", path=self.alerts_path, name=ALERTS_FILE_OUTPUT)
        self.router: AlertRouter = build_router([local, *outputs], store_dir / ROUTER_DIR, hostname)
        self.router.start()
        self.stats = DetectionStats()
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=256)
        self._thread = threading.Thread(target=self._run, name="logseal-detect", daemon=True)
        self._thread.start()

    @staticmethod
    def _restore(path: Path, restore: Any, what: str) -> None:
        if not path.exists():
            return
        try:
            restore(path.read_bytes())
        except ValueError as exc:
            log.error("%s state unreadable; starting empty path=%s reason=%s", what, path, exc)

    def submit_body(self, body: bytes) -> None:
        """The decompressed payload of a stored batch (decoded on the worker thread)."""
        self._queue.put(("body", body))

    def submit_event(self, event: dict[str, Any]) -> None:
        """An event the aggregator makes itself (security events: rejections, chain breaks)."""
        self._queue.put(("event", event))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self.router.close()
        atomic_write(self.state_path, self.detector.snapshot())
        if self.anomaly is not None:
            atomic_write(self.baseline_path, self.anomaly.snapshot())

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, value = item
            try:
                events = decode_events(value) if kind == "body" else [value]
                found: list[Alert] = []
                for event in events:
                    self.stats.events += 1
                    found.extend(self.detector.process(event))
                    if self.anomaly is not None:
                        found.extend(self.anomaly.process(event))
                if found:
                    self.router.submit(found)
                    for alert in found:
                        self._count(alert)
            except Exception:  # never let one bad event stop detection
                log.exception("detection failed on a batch; going on")

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
