"""Running the detector on the verified stream, off the ingest path.

Batches are queued after they are stored (so detection never delays an ack); a worker thread
decodes them, runs every loaded rule, and appends alerts as JSON lines (flushed and fsynced per
batch). The correlation state is saved to `STORE/detect.state` at shutdown and restored at start,
so a restart neither forgets an open window nor emits an alert twice.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.detect import Detector
from agent.seal import decode_events

log = logging.getLogger(__name__)

STATE_FILE = "detect.state"


@dataclass
class DetectionStats:
    events: int = 0
    alerts: int = 0
    alerts_by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    latency_s: list[float] = field(default_factory=list)


class DetectionShell:
    def __init__(self, specs: list[str], store_dir: Path, alerts_file: Path | None) -> None:
        self.detector = Detector.load(specs)
        self.state_path = store_dir / STATE_FILE
        if self.state_path.exists():
            try:
                self.detector.restore(self.state_path.read_bytes())
            except ValueError as exc:
                log.error("detection state unreadable; starting with empty windows path=%s reason=%s",
                          self.state_path, exc)
        self.alerts_path = alerts_file or store_dir / "alerts.jsonl"
        self.stats = DetectionStats()
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=256)
        self._thread = threading.Thread(target=self._run, name="logseal-detect", daemon=True)
        self._thread.start()

    def submit_body(self, body: bytes) -> None:
        """The decompressed payload of a stored batch (decoded on the worker thread)."""
        self._queue.put(("body", body))

    def submit_event(self, event: dict[str, Any]) -> None:
        """An event the aggregator makes itself (security events: rejections, chain breaks)."""
        self._queue.put(("event", event))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(self.detector.snapshot())
        os.replace(tmp, self.state_path)

    def _run(self) -> None:
        with self.alerts_path.open("ab") as out:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                kind, value = item
                try:
                    events = decode_events(value) if kind == "body" else [value]
                    lines = []
                    for event in events:
                        self.stats.events += 1
                        for alert in self.detector.process(event):
                            lines.append(alert.to_json())
                            self._count(alert.to_dict())
                    if lines:
                        out.write("".join(line + "\n" for line in lines).encode())
                        out.flush()
                        os.fsync(out.fileno())
                except Exception:  # never let one bad event stop detection
                    log.exception("detection failed on a batch; going on")

    def _count(self, alert: dict[str, Any]) -> None:
        self.stats.alerts += 1
        rule = alert.get("rule") or {}
        key = (str(rule.get("id", "?")), str(rule.get("level", "?")))
        self.stats.alerts_by_rule[key] = self.stats.alerts_by_rule.get(key, 0) + 1
        started = (alert.get("event") or {}).get("end") or alert.get("@timestamp")
        if isinstance(started, str):
            from agent.aggregator.index_rows import timestamp_ns

            ns = timestamp_ns(started)
            if ns:
                self.stats.latency_s = (self.stats.latency_s + [time.time() - ns / 1e9])[-1000:]
