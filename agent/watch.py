"""Waking the agent when watched folders change (inotify through watchdog), so new lines and new
files are picked up at once. Polling at `tail.poll_interval_ms` stays as the fallback: a folder
that cannot be watched (missing, inotify limits) costs latency, never data.
"""

from __future__ import annotations

import glob
import logging
import os
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


def watch_roots(patterns: list[str]) -> set[str]:
    """The existing folders holding files a glob can match (globs over folders are left to the scan)."""
    folders = {os.path.dirname(pattern) for pattern in patterns}
    return {f for f in folders if f and not glob.has_magic(f) and os.path.isdir(f)}


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event, rescan: threading.Event) -> None:
        self._wake = wake
        self._rescan = rescan

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "deleted"):
            self._rescan.set()
        self._wake.set()


class ChangeWatcher:
    def __init__(self, patterns: list[str], wake: threading.Event) -> None:
        self.rescan = threading.Event()
        self._roots = watch_roots(patterns)
        self._handler = _Wake(wake, self.rescan)
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        if not self._roots:
            return
        observer = Observer()
        for root in sorted(self._roots):
            try:
                observer.schedule(self._handler, root, recursive=False)
            except OSError as exc:
                log.warning("cannot watch a folder; polling it instead", extra={"folder": root, "reason": exc.strerror})
        try:
            observer.start()
        except OSError as exc:
            log.warning("file change notification unavailable; polling instead", extra={"reason": exc.strerror})
            return
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
