"""Forwarding the store's events to SIEMs: a cursor per output, batching, backoff, dead letters.

    forwarding = Forwarding(config.forward, store_dir)   # reads tokens; ConfigError names the key
    forwarding.start()                                    # one thread per output
    forwarding.wake()                                     # after a batch is stored: look now
    forwarding.close()                                    # stop the threads (cursors are saved per request)

Design constraints (what the tests check):

- **Reads the store, never the ingest path.** Each output reads the stored batches in ingest order
  with its own read-only connection on its own thread, so a slow or dead SIEM never delays an ack.
- **At least once.** An output's cursor (`STORE/forward/<name>.cursor`: versioned, SHA-256 checked,
  written temp → fsync → rename → fsync(dir)) moves only past events the receiver accepted or that
  were dead-lettered, and is saved after each request. A crash between the receiver's answer and the
  save sends those events again: each carries its `event.id` for dedup downstream (Elasticsearch's
  `_id`, which makes the resend a harmless 409). An unreadable cursor file restarts at the oldest
  event: resend rather than lose.
- **Transient failures stop the output, in order.** A refused connection, a timeout, 408/425/429,
  5xx (and 401/403/404: a wrong token or URL) leave the cursor on the first event not accepted and
  back the output off: `backoff_initial_ms` doubling to `backoff_max_ms`, each wait jittered into
  [d/2, d], retried for ever.
- **Permanent rejections go on.** Other 4xx answers (isolated to single events by halving the
  request) and per-item `_bulk` errors append the document and the reason to the dead-letter file
  (fsynced before the cursor moves); a stored batch that cannot be read is dead-lettered by id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.aggregator.alert_outputs import atomic_write
from agent.aggregator.forward.config import ForwardConfig
from agent.aggregator.forward.formats import Item, Outcome, Result, document
from agent.aggregator.forward.senders import Sender, make_sender
from agent.aggregator.forward.source import OLDEST, Entry, Position, StoreReader

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
STATE_DIR = "forward"
LAG_REFRESH_S = 1.0


@dataclass
class ForwardStats:
    forwarded: int = 0
    retries: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # not in `datasets`
    lag: int = 0
    failing: bool = False
    last_error: str = ""


def _cursor_blob(key: str, position: Position) -> bytes:
    body = f"{key}:{position[0]}:{position[1]}"
    return json.dumps({"version": CURSOR_VERSION, "output": key, "batch_id": position[0], "index": position[1],
                       "sha256": hashlib.sha256(body.encode()).hexdigest()}).encode()


def _parse_cursor(key: str, blob: bytes) -> Position:
    obj = json.loads(blob)
    if not isinstance(obj, dict) or obj.get("version") != CURSOR_VERSION:
        raise ValueError(f"version {obj.get('version') if isinstance(obj, dict) else None!r}, "
                         f"expected {CURSOR_VERSION}")
    position = (int(obj["batch_id"]), int(obj["index"]))
    if _cursor_blob(key, position) != blob or position[0] < 1 or position[1] < 0:
        raise ValueError("checksum mismatch")
    return position


class Forwarder:
    """One output: its cursor, its sender and its loop. `step()` is one pass (tests drive it directly)."""

    def __init__(self, config: ForwardConfig, sender: Sender, reader: StoreReader, state_dir: Path,
                 clock: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random) -> None:
        self.config = config
        self.key = config.key
        self.sender = sender
        self.reader = reader
        self.clock = clock
        self.jitter = jitter
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cursor_path = state_dir / f"{self.key}.cursor"
        self.dead_letter_path = config.dead_letter or state_dir / f"{self.key}.dead-letter.jsonl"
        self.datasets = frozenset(config.datasets)
        self.stats = ForwardStats()
        self.failures = 0
        self.next_attempt = 0.0
        self._lag_at = -LAG_REFRESH_S
        self.wake_event = threading.Event()
        self.position = self._load_cursor()
        self._saved = self.position
        self._save()
        self._refresh_lag(force=True)

    # -- the cursor ----------------------------------------------------------------------------------

    def _load_cursor(self) -> Position:
        if not self.cursor_path.exists():
            start = self.reader.newest() if self.config.start_at == "newest" else OLDEST
            log.info("forward output starts", extra={"output": self.key, "type": self.config.type,
                                                      "at": self.config.start_at, "batch": start[0]})
            return start
        try:
            return _parse_cursor(self.key, self.cursor_path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("forward cursor unreadable; starting at the oldest stored event (resending)",
                      extra={"output": self.key, "path": str(self.cursor_path), "reason": str(exc)})
            return OLDEST

    def _save(self) -> None:
        atomic_write(self.cursor_path, _cursor_blob(self.key, self.position))
        self._saved = self.position

    # -- one pass ------------------------------------------------------------------------------------

    def step(self) -> int:
        """Send what is stored after the cursor (up to one read); the number of events accepted.

        Does nothing while backing off. Afterwards `caught_up` says whether more is waiting."""
        if self.clock() < self.next_attempt:
            return 0
        entries = self.reader.read(self.position, self.config.batch_size)
        self.caught_up = len(entries) < self.config.batch_size
        accepted = 0
        chunk: list[tuple[Position, Item | None]] = []
        size = items = 0
        for entry in entries:
            if entry.problem:
                ok, n = self._deliver(chunk)
                accepted += n
                if not ok:
                    self._refresh_lag(force=False)
                    return accepted
                chunk, size, items = [], 0, 0
                self._dead_letter_problem(entry)
                self.position = entry.after
                self._save()
                continue
            assert entry.event is not None
            dataset = str((entry.event.get("event") or {}).get("dataset", ""))
            if self.datasets and dataset not in self.datasets:
                self.stats.skipped += 1
                chunk.append((entry.after, None))
                continue
            item = Item(entry.event, document(entry.event, self.config.format))
            item_size = len(orjson.dumps(item.doc)) + 256
            if items and (items >= self.config.batch_size or size + item_size > self.config.batch_max_bytes):
                ok, n = self._deliver(chunk)
                accepted += n
                if not ok:
                    self._refresh_lag(force=False)
                    return accepted
                chunk, size, items = [], 0, 0
            chunk.append((entry.after, item))
            size += item_size
            items += 1
        ok, n = self._deliver(chunk)
        accepted += n
        if ok and self.position != self._saved:
            self._save()  # only skipped events moved the cursor
        self._refresh_lag(force=ok and self.caught_up)
        return accepted

    def _deliver(self, chunk: Sequence[tuple[Position, Item | None]]) -> tuple[bool, int]:
        """Send a chunk; move and save the cursor past what is done. (no transient failure, accepted)."""
        if not chunk:
            return True, 0
        items = [item for _, item in chunk if item is not None]
        results = iter(self.sender.send(items) if items else [])
        failure: Result | None = None
        dead: list[tuple[Item, str]] = []
        accepted = 0
        position = self.position
        for after, item in chunk:
            if item is not None:
                result = next(results)
                if result.outcome is Outcome.RETRY:
                    failure = result
                    break
                if result.outcome is Outcome.REJECTED:
                    dead.append((item, result.reason))
                else:
                    accepted += 1
            position = after
        if dead:
            self._dead_letter(dead)
        self.stats.forwarded += accepted
        if position != self.position:
            self.position = position
            self._save()
        if failure is not None:
            self._failed(failure.reason)
            return False, accepted
        if self.failures:
            log.info("forward output recovered", extra={"output": self.key, "failures": self.failures})
        self.failures, self.next_attempt = 0, 0.0
        self.stats.failing, self.stats.last_error = False, ""
        return True, accepted

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.stats.retries += 1
        cfg = self.config
        ceiling = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * 2 ** min(self.failures - 1, 30)) / 1000
        delay = ceiling / 2 + self.jitter() * ceiling / 2
        self.next_attempt = self.clock() + delay
        if reason != self.stats.last_error:
            log.warning("forward output failing; will retry",
                        extra={"output": self.key, "delay_s": round(delay, 2), "reason": reason})
        self.stats.failing, self.stats.last_error = True, reason

    def _append_dead_letters(self, records: Sequence[dict[str, Any]]) -> None:
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as f:
            f.write(b"".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                             for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.stats.dead_lettered += len(records)

    def _dead_letter(self, rejected: Sequence[tuple[Item, str]]) -> None:
        self._append_dead_letters([{"output": self.key, "reason": reason, "event_id": item.id, "document": item.doc}
                                   for item, reason in rejected])
        for item, reason in rejected:
            log.error("event permanently rejected; written to the dead-letter file",
                      extra={"output": self.key, "event_id": item.id, "reason": reason})

    def _dead_letter_problem(self, entry: Entry) -> None:
        self._append_dead_letters([{"output": self.key, "reason": entry.problem, "position": list(entry.after)}])
        log.error("stored events cannot be forwarded; noted in the dead-letter file",
                  extra={"output": self.key, "reason": entry.problem})

    def _refresh_lag(self, force: bool) -> None:
        """Counting what is left costs a scan of the index rows after the cursor: at most once a second
        while catching up, and after each pass that caught up (then it is cheap)."""
        now = self.clock()
        if force or now - self._lag_at >= LAG_REFRESH_S:
            self.stats.lag = self.reader.lag(self.position)
            self._lag_at = now

    # -- the loop ------------------------------------------------------------------------------------

    caught_up = True

    def run(self, stop: threading.Event) -> None:
        linger = self.config.linger_ms / 1000
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # a bug or a store hiccup must not end forwarding for good
                log.exception("forward pass failed; retrying", extra={"output": self.key})
                self._failed(f"internal error: {exc}")
            if self.failures:
                stop.wait(max(0.0, self.next_attempt - self.clock()))
            elif self.caught_up:
                self.wake_event.wait(linger)
                self.wake_event.clear()

    def close(self) -> None:
        self.sender.close()
        self.reader.close()


class Forwarding:
    """Every `[[forward]]` output of an aggregator, each on its own thread."""

    def __init__(self, configs: Sequence[ForwardConfig], store_dir: Path) -> None:
        state_dir = store_dir / STATE_DIR
        self.forwarders = [Forwarder(c, make_sender(c), StoreReader(store_dir), state_dir) for c in configs]
        for c in configs:
            if c.tls_insecure:
                log.warning("forward output does not check the receiver's certificate (tls_insecure)",
                            extra={"output": c.key})
        self._stop = threading.Event()
        self._threads: list[tuple[Forwarder, threading.Thread]] = []

    def start(self) -> None:
        for fwd in self.forwarders:
            thread = threading.Thread(target=fwd.run, args=(self._stop,), name=f"logseal-forward-{fwd.key}",
                                      daemon=True)
            thread.start()
            self._threads.append((fwd, thread))

    def wake(self) -> None:
        for fwd in self.forwarders:
            fwd.wake_event.set()

    def close(self, grace_s: float = 5) -> None:
        """Stop every output. One still waiting on its receiver after `grace_s` has the request broken
        off: it fails as transient, so its cursor stays and those events go out after the restart."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + grace_s
        for fwd, thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("forward output still waiting on its receiver at shutdown; breaking the request off",
                            extra={"output": fwd.key})
                fwd.sender.abort()
                thread.join(timeout=grace_s)
        self._threads = []
        for fwd in self.forwarders:
            fwd.close()

    def stats(self) -> dict[str, ForwardStats]:
        return {fwd.key: fwd.stats for fwd in self.forwarders}
