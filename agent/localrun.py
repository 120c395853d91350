"""Running an aggregator and agents as real local processes (for `demo`, `bench` and tests)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from agent.keys import write_keypair


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll `predicate` until true; raise TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def stored_event_count(store_dir: Path) -> int:
    """Events the aggregator has acknowledged (indexed and fsynced), read without disturbing it."""
    index = store_dir / "index.db"
    if not index.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COALESCE(SUM(event_count), 0) FROM batches").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def logseal_command() -> list[str]:
    return [sys.executable, "-m", "agent"]


@dataclass
class LocalProcess:
    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send `sig` and wait; returns the exit code (negative for a signal)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return int(self.process.returncode)

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The process's JSON log records (agent/daemon_log.py), in order; other lines are left out."""
        records = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # e.g. a line gRPC's C core wrote to stderr itself
            if isinstance(record, dict):
                records.append(record)
        return records

    def logged(self, msg: str, **fields: object) -> list[dict[str, Any]]:
        """The records whose sentence is `msg` and whose fields hold at least `fields`."""
        return [r for r in self.log_records()
                if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]


class Workspace:
    """A folder holding keys, configs, a store and logs for one local aggregator and its agents."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.trusted = root / "trusted"
        self.store = root / "store"
        self.trusted.mkdir(parents=True, exist_ok=True)
        self.keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port_file = root / "aggregator.port"
        self.aggregator: LocalProcess | None = None
        self.processes: list[LocalProcess] = []

    def stop_all(self) -> None:
        """Kill whatever this workspace started and is still running (test teardown)."""
        for proc in self.processes:
            if proc.running():
                proc.kill()
            elif proc._log is not None and not proc._log.closed:
                proc._log.close()

    def enrol(self, node_id: str) -> Path:
        key, pub = write_keypair(node_id, self.keys)
        shutil.copy(pub, self.trusted / pub.name)
        return key

    def start_aggregator(self, extra: str = "", port: int = 0) -> LocalProcess:
        """Start the aggregator on `port` (0: a free one, see `self.port`) and wait until it serves."""
        config = self.root / "aggregator.toml"
        self.port_file.unlink(missing_ok=True)
        config.write_text(f'listen = "127.0.0.1:{port}"\nstore_dir = "{self.store}"\n'
                          f'trusted_keys_dir = "{self.trusted}"\nport_file = "{self.port_file}"\n{extra}')
        proc = LocalProcess("aggregator", [*logseal_command(), "aggregator", "--config", str(config)],
                            self.root / "aggregator.log")
        proc.start()
        self.processes.append(proc)
        try:
            wait_for(lambda: self.port_file.exists() or not proc.running(), 30, "the aggregator to listen")
        except TimeoutError:
            proc.kill()
            raise
        if not proc.running():
            raise RuntimeError(f"the aggregator exited at start: {proc.log_text()[-2000:]}")
        self.aggregator = proc
        return proc

    @property
    def port(self) -> int:
        return int(self.port_file.read_text())

    def agent_config(self, node_id: str, sources: list[tuple[str, str]], extra: str = "",
                     port: int | None = None, source_extra: str = "") -> Path:
        """Write `<node_id>.toml`; `sources` are (type, glob) pairs, each given `source_extra` lines."""
        lines = [f'node_id = "{node_id}"', f'key = "{self.keys / (node_id + ".key")}"',
                 f'spool_dir = "{self.root / "spool" / node_id}"',
                 f'aggregator = "127.0.0.1:{port if port is not None else self.port}"']
        for source_type, pattern in sources:
            lines += ["[[source]]", f'type = "{source_type}"', f'paths = ["{pattern}"]', source_extra]
        config = self.root / f"{node_id}.toml"
        config.write_text("\n".join(lines) + "\n" + extra)
        return config

    def start_agent(self, config: Path) -> LocalProcess:
        proc = LocalProcess(f"agent {config.stem}", [*logseal_command(), "agent", "--config", str(config)],
                            self.root / f"{config.stem}.log")
        proc.start()
        self.processes.append(proc)
        return proc

    def stored_events(self) -> int:
        return stored_event_count(self.store)
