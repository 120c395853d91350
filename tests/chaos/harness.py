"""The chaos harness: real agent and aggregator processes under rotation, kill -9, restarts and cuts.

A writer appends self-identifying lines (`chaos:<file>:<seq>:`) at a fixed rate to three syslog
files and one Kubernetes audit file. A timeline drawn from the seed rotates them (rename+create,
copytruncate, rotate-then-compress, delete after drain, kube-apiserver backups), `kill -9`s the
agent and restarts it, `kill -9`s the aggregator and starts it on the same port, and cuts the
network with a TCP proxy the harness controls (the agent ships through it). At the end the writer
stops, every line must be stored exactly once, in order per written file; `logseal verify` must
pass; and gap records must match the losses the harness caused on purpose, and no other.

Losses. Deleting a file, or compressing a rotated one away, loses what the agent has not yet read;
the harness therefore does both only once the agent's spool covers the file to its end (as
logrotate's `delaycompress` leaves a rotated file for a cycle). copytruncate copies to a name the
glob matches, with the writer held, so the copy is always findable: no gap is expected from it.
One loss is caused on purpose (`intentional_loss`): once the agent has drained a syslog file it is
stopped (SIGSTOP), `loss_lines` lines are appended, the file is copied where no glob looks and
truncated, and the agent continues (SIGCONT). Those lines must be missing, and exactly one gap
record must name them: the file, starting and ending where the agent had read to (it never saw
the appended bytes, so it cannot know how many there were). Kills wait until the agent noticed.

Run a soak: `python -m tests.chaos.harness --seed 7 --duration 1800 [--workdir DIR]`; it prints a
JSON summary and exits 0 when every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import gzip
import heapq
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agent.localrun import LocalProcess, Workspace, logseal_command, stored_event_count, wait_for
from agent.spool import decode_record
from agent.status import read_status
from agent.tail import Position, fingerprint
from tests.chaos.proxy import TcpProxy

NODE = "chaos-node"
SYSLOG_FILES = ("a", "b", "c")
K8S_FILE = "k8s"
LINE_BYTES = 300  # > the tailer's 256-byte fingerprints: a file's head is complete after one line
MARK = re.compile(rb"chaos:([a-z0-9]+):(\d+):")
ROTATIONS_SYSLOG = ("rename", "copytruncate", "compress", "delete")
KEEP_ROTATED = 2  # rotated generations kept per file; older ones are deleted once drained


@dataclass(frozen=True)
class Settings:
    seed: int
    duration_s: float
    workdir: Path
    lines_per_s: float = 30.0  # per written file
    rotate_every_s: float = 1.5
    kills: int = 0  # 0: derived from the duration (at least 10)
    aggregator_restarts: int = 0  # 0: derived (at least 3)
    network_cuts: int = 0  # 0: derived (at least 3)
    intentional_loss: bool = True  # once a run: copytruncate with the copy moved away, unread
    loss_lines: int = 20
    drain_timeout_s: float = 120.0
    job_timeout_s: float = 60.0
    epoch_batches: int = 0  # > 0: the node changes its signing key epoch every this many batches


# -- the written files -----------------------------------------------------------------------------
def syslog_line(name: str, seq: int) -> bytes:
    head = f"Nov 26 10:{seq // 60 % 60:02d}:{seq % 60:02d} {NODE} app-{name}[{1000 + seq % 50}]: chaos:{name}:{seq}: "
    return (head + "payload " + "x" * (LINE_BYTES - len(head) - 8)).encode()


def k8s_line(seq: int) -> bytes:
    record = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
              "auditID": f"chaos:{K8S_FILE}:{seq}:", "stage": "ResponseComplete", "verb": "get",
              "requestURI": f"/api/v1/namespaces/default/pods/p-{seq}",
              "user": {"username": "system:serviceaccount:default:chaos", "groups": ["system:authenticated"]},
              "sourceIPs": ["10.0.0.1"], "objectRef": {"resource": "pods", "namespace": "default", "name": f"p-{seq}"},
              "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2026-11-26T10:00:00.000000Z",
              "stageTimestamp": "2026-11-26T10:00:00.000001Z"}
    return orjson.dumps(record)


def _syslog_maker(name: str) -> Callable[[int], bytes]:
    return lambda seq: syslog_line(name, seq)


@dataclass
class WrittenFile:
    """One file the writer appends to, and its rotated generations."""

    name: str
    path: Path
    make: Callable[[int], bytes]
    stream: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    written: int = 0
    generation: int = 0
    rotated: list[Path] = field(default_factory=list)

    def append_until(self, count: int) -> None:
        with self.lock:
            if count <= self.written:
                return
            data = b"".join(self.make(seq) + b"\n" for seq in range(self.written, count))
            with self.path.open("ab") as f:
                f.write(data)
            self.written = count


class Writer:
    """Appends to every file at a fixed rate, each file on its own thread (a rotation holds one file)."""

    def __init__(self, files: list[WrittenFile], lines_per_s: float) -> None:
        self.files = files
        self.rate = lines_per_s
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(f,), name=f"chaos-writer-{f.name}", daemon=True)
                        for f in files]

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()

    def _run(self, file: WrittenFile) -> None:
        while not self.stopping.wait(0.05):
            file.append_until(int((time.monotonic() - self.started) * self.rate))

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout_s)
            if t.is_alive():
                raise TimeoutError(f"writer thread {t.name} did not stop within {timeout_s:.0f}s (a file lock held?)")


# -- what the agent has durably taken --------------------------------------------------------------
def spooled_positions(spool_dir: Path, stream: str) -> dict[str, Position]:
    """Per file key (dev:ino), the position in the stream's newest spool record: its newest spooled
    batch, else its checkpoint (the newest acked one). Each record holds every file's position."""
    folder = spool_dir / stream
    newest: tuple[int, dict[str, Position]] = (-1, {})
    candidates = [folder / "checkpoint"]
    with contextlib.suppress(OSError):
        candidates += sorted(p for p in folder.iterdir() if p.name.endswith(".batch"))[-2:]
    for path in candidates:
        try:
            state, _ = decode_record(path.read_bytes())
        except Exception:  # noqa: BLE001 - acked and deleted, or being replaced: the next poll sees it
            continue
        if state.head.seq > newest[0]:
            newest = (state.head.seq, state.positions)
    return newest[1]


def spooled_offsets(spool_dir: Path, stream: str) -> dict[str, int]:
    return {key: p.offset for key, p in spooled_positions(spool_dir, stream).items()}


def drained(spool_dir: Path, stream: str, path: Path) -> bool:
    """Is every byte of `path` covered by the spool (so deleting it can lose nothing)? The position
    must be this file's: same inode and same first bytes (inode numbers are reused)."""
    try:
        st = path.stat()
        position = spooled_positions(spool_dir, stream).get(f"{st.st_dev}:{st.st_ino}")
        if position is None or position.offset < st.st_size:
            return False
        with path.open("rb") as f:
            return fingerprint(f.read(position.head_len)) == position.head
    except FileNotFoundError:
        return True


@dataclass
class Job:
    """An action that waits for the agent to drain a file (polled by the timeline loop)."""

    what: str
    ready: Callable[[], bool]
    act: Callable[[], None]
    deadline: float
    on_timeout: Callable[[], None] = lambda: None


# -- the harness -------------------------------------------------------------------------------------
def _drained_check(spool_dir: Path, stream: str, path: Path) -> Callable[[], bool]:
    return lambda: drained(spool_dir, stream, path)


def _unlinker(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


class Chaos:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.root = settings.workdir
        self.root.mkdir(parents=True, exist_ok=True)
        self.ws = Workspace(self.root / "ws")
        self.logs = self.root / "logs"
        (self.logs / "syslog").mkdir(parents=True, exist_ok=True)
        (self.logs / "k8s").mkdir(parents=True, exist_ok=True)
        self.spool_dir = self.root / "spool"
        self.files = [WrittenFile(n, self.logs / "syslog" / f"{n}.log", _syslog_maker(n), "syslog")
                      for n in SYSLOG_FILES]
        self.files.append(WrittenFile(K8S_FILE, self.logs / "k8s" / "audit.log", k8s_line, "k8s"))
        self.writer = Writer(self.files, settings.lines_per_s)
        self.agent: LocalProcess | None = None
        self.proxy: TcpProxy | None = None
        self.aggregator_port = 0
        self.jobs: list[Job] = []
        self.timeline: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._order = 0
        self.counts: Counter[str] = Counter()
        self.rotations: Counter[str] = Counter()
        self.errors: list[str] = []
        self.expected_gaps: list[dict[str, Any]] = []
        self.agent_snapshots: list[dict[str, Any]] = []
        self.agent_exit_code: int | None = None
        self.settling = False  # an intentional loss waits for the agent to notice it: no kills meanwhile
        self.expected_lost: dict[str, set[int]] = {}
        self._t0 = time.monotonic()
        self._actions = (self.root / "actions.log").open("a")

    def note(self, what: str) -> None:
        """One line per action in `workdir/actions.log`, stamped as the daemons' JSON logs are (`time`)."""
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._actions.write(f"{stamp} +{time.monotonic() - self._t0:7.2f}s {what}\n")
        self._actions.flush()

    # -- setup ---------------------------------------------------------------------------------
    def agent_config(self) -> Path:
        config = self.root / "agent.toml"
        config.write_text("\n".join([
            f'node_id = "{NODE}"', f'key = "{self.ws.keys / (NODE + ".key")}"', f'spool_dir = "{self.spool_dir}"',
            f'aggregator = "127.0.0.1:{self.proxy.port if self.proxy else 0}"',
            "[[source]]", 'type = "syslog"', 'name = "syslog"', f'paths = ["{self.logs / "syslog"}/*.log*"]',
            "[[source]]", 'type = "k8s_audit"', 'name = "k8s"', f'paths = ["{self.logs / "k8s"}/audit*.log"]',
            "keep_original = true",
            "[batch]", "max_events = 50", "linger_ms = 20",
            "[ship]", "backoff_initial_ms = 20", "backoff_max_ms = 300",
            *(["[keys]", f"epoch_batches = {self.s.epoch_batches}"] if self.s.epoch_batches else []),
        ]) + "\n")
        return config

    def plan(self) -> None:
        """The timeline: every action and its moment, drawn from the seed."""
        d = self.s.duration_s
        kills = self.s.kills or max(10, int(d / 6))
        restarts = self.s.aggregator_restarts or max(3, int(d / 25))
        cuts = self.s.network_cuts or max(3, int(d / 20))

        def moments(n: int, start: float) -> list[float]:
            # Evenly spread with jitter, so each kind happens throughout the run, never all at once.
            span = (d - start - 3) / n
            return [start + span * i + self.rng.uniform(0.1, 0.9) * span for i in range(n)]

        for t in moments(kills, 1.0):
            self.schedule(t, "kill_agent")
        for t in moments(restarts, 2.0):
            self.schedule(t, "restart_aggregator")
        for t in moments(cuts, 1.5):
            self.schedule(t, "cut_network")
        if self.s.intentional_loss:
            self.schedule(d * self.rng.uniform(0.3, 0.6), "lose", self.rng.choice(SYSLOG_FILES))
        t = 1.0
        while t < d - 2:
            t += self.rng.uniform(0.5, 1.5) * self.s.rotate_every_s
            file = self.rng.choice(self.files)
            kind = "kube" if file.name == K8S_FILE else self.rng.choice(ROTATIONS_SYSLOG)
            self.schedule(t, "rotate", file.name, kind)

    def schedule(self, at: float, action: str, *args: Any) -> None:
        self._order += 1
        heapq.heappush(self.timeline, (at, self._order, action, args))

    # -- actions -------------------------------------------------------------------------------
    def start_agent(self) -> None:
        self.agent = self.ws.start_agent(self.root / "agent.toml")

    def kill_agent(self, now: float) -> None:
        if self.agent is None or not self.agent.running() or self.settling:
            self.schedule(now + 0.5, "kill_agent")
            return
        status = read_status(self.spool_dir)
        if status is not None:
            self.agent_snapshots.append(status)
        self.agent.kill()
        self.counts["agent_kills"] += 1
        self.schedule(now + self.rng.uniform(0.05, 1.5), "start_agent")

    def restart_aggregator(self, now: float) -> None:
        aggregator = self.ws.aggregator
        if aggregator is None or not aggregator.running():
            self.schedule(now + 0.5, "restart_aggregator")
            return
        aggregator.kill()
        self.counts["aggregator_restarts"] += 1
        self.schedule(now + self.rng.uniform(0.1, 2.0), "start_aggregator")

    def cut_network(self, now: float) -> None:
        assert self.proxy is not None
        if self.proxy.refusing:
            self.schedule(now + 0.5, "cut_network")
            return
        self.proxy.cut()
        self.counts["network_cuts"] += 1
        self.schedule(now + self.rng.uniform(0.5, 4.0), "restore_network")

    def rotate(self, name: str, kind: str) -> None:
        file = next(f for f in self.files if f.name == name)
        if not file.lock.acquire(timeout=0.2):
            return  # a delete of this file is waiting for its drain; rotate another time
        keep_lock = False
        try:
            if not file.path.exists():
                return
            if kind == "delete":
                self._delete_when_drained(file)  # holds the writer off until the file is drained and gone
                keep_lock = True
                self.rotations[kind] += 1
                return
            file.generation += 1
            if kind == "kube":
                stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3]
                target = file.path.with_name(f"audit-{stamp}-{file.generation}.log")
            else:
                target = file.path.with_name(f"{file.path.name}.{file.generation}")
            if kind == "copytruncate":
                shutil.copyfile(file.path, target)
                os.truncate(file.path, 0)
            else:  # rename (+ create), compress (rename, create, compress when drained), kube (rename)
                os.rename(file.path, target)
                file.path.touch()
            self.rotations[kind] += 1
            if kind == "compress":
                self._compress_when_drained(file, target)
            else:
                file.rotated.append(target)
                self._prune(file)
        finally:
            if not keep_lock:
                file.lock.release()

    def lose(self, name: str, now: float) -> None:
        """The loss on purpose: with the agent stopped (SIGSTOP) after it drained the file, append
        lines, copy the file where no glob looks, truncate it. Those lines are lost, and the agent
        must say so with a gap record starting where it had read to."""
        file = next(f for f in self.files if f.name == name)
        if not file.lock.acquire(timeout=0.2):
            self.schedule(now + 1.0, "lose", name)
            return

        def act() -> None:
            assert self.agent is not None
            start = file.path.stat().st_size
            st = file.path.stat()
            os.kill(self.agent.pid, signal.SIGSTOP)
            try:
                first = file.written
                with file.path.open("ab") as f:
                    f.write(b"".join(file.make(seq) + b"\n" for seq in range(first, first + self.s.loss_lines)))
                file.written += self.s.loss_lines
                end = file.path.stat().st_size
                (self.root / "lost").mkdir(exist_ok=True)
                shutil.copyfile(file.path, self.root / "lost" / f"{file.path.name}.{file.generation}")
                os.truncate(file.path, 0)
            finally:
                os.kill(self.agent.pid, signal.SIGCONT)
                file.lock.release()
            self.rotations["copytruncate_copy_lost"] += 1
            self.expected_lost.setdefault(name, set()).update(range(first, first + self.s.loss_lines))
            # The agent, stopped, never saw the appended bytes: its gap starts and ends where it had read to
            # ("how much is unknown"); `lost_to` is where the lost bytes really ended.
            self.expected_gaps.append({"path": str(file.path), "start": start, "end": start, "lost_to": end})
            self.settling = True
            key = f"{st.st_dev}:{st.st_ino}"

            def noticed() -> bool:  # the agent has sealed a batch positioned after the truncation
                return spooled_offsets(self.spool_dir, file.stream).get(key, start) < start

            def settled() -> None:
                self.settling = False

            self.jobs.append(Job(f"agent noticed the truncation of {file.path.name}", noticed, settled,
                                 time.monotonic() + self.s.job_timeout_s, settled))

        def ready() -> bool:
            return self.agent is not None and self.agent.running() and drained(self.spool_dir, file.stream,
                                                                                 file.path)

        self.jobs.append(Job(f"lose lines of {file.path.name}", ready, act, time.monotonic() + self.s.job_timeout_s,
                             file.lock.release))

    def _delete_when_drained(self, file: WrittenFile) -> None:
        def act() -> None:
            file.path.unlink()
            file.lock.release()

        def timeout() -> None:
            file.lock.release()

        self.jobs.append(Job(f"delete {file.path.name}", lambda: drained(self.spool_dir, file.stream, file.path),
                             act, time.monotonic() + self.s.job_timeout_s, timeout))

    def _compress_when_drained(self, file: WrittenFile, target: Path) -> None:
        def act() -> None:
            with target.open("rb") as src, gzip.open(target.with_name(target.name + ".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            target.unlink()

        self.jobs.append(Job(f"compress {target.name}", lambda: drained(self.spool_dir, file.stream, target), act,
                             time.monotonic() + self.s.job_timeout_s))

    def _prune(self, file: WrittenFile) -> None:
        while len(file.rotated) > KEEP_ROTATED:
            old = file.rotated.pop(0)
            self.jobs.append(Job(f"prune {old.name}", _drained_check(self.spool_dir, file.stream, old),
                                 _unlinker(old), time.monotonic() + self.s.job_timeout_s))

    def poll_jobs(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs):
            if job.ready():
                self.note(job.what)
                job.act()
                self.jobs.remove(job)
            elif now > job.deadline:
                self.errors.append(f"{job.what}: the agent did not drain the file within {self.s.job_timeout_s:.0f}s")
                job.on_timeout()
                self.jobs.remove(job)

    def run_action(self, action: str, args: tuple[Any, ...], now: float) -> None:
        self.note(" ".join([action, *map(str, args)]))
        if action == "kill_agent":
            self.kill_agent(now)
        elif action == "start_agent":
            self.start_agent()
        elif action == "restart_aggregator":
            self.restart_aggregator(now)
        elif action == "start_aggregator":
            self.ws.start_aggregator(port=self.aggregator_port)
        elif action == "cut_network":
            self.cut_network(now)
        elif action == "restore_network":
            assert self.proxy is not None
            self.proxy.restore()
        elif action == "lose":
            self.lose(args[0], now)
        elif action == "rotate":
            self.rotate(*args)
        else:
            raise ValueError(action)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.ws.enrol(NODE)
        self.ws.start_aggregator()
        self.aggregator_port = self.ws.port
        self.proxy = TcpProxy(self.aggregator_port).start()
        self.agent_config()
        self.plan()
        try:
            self.writer.start()
            self.start_agent()
            t0 = time.monotonic()
            while True:
                now = time.monotonic() - t0
                while self.timeline and self.timeline[0][0] <= now:
                    _, _, action, args = heapq.heappop(self.timeline)
                    self.run_action(action, args, now)
                self.poll_jobs()
                if now >= self.s.duration_s and not any(a in ("start_agent", "start_aggregator", "restore_network")
                                                        for _, _, a, _ in self.timeline):
                    break
                time.sleep(0.02)
            self.timeline.clear()
            return self.finish(started)
        finally:
            self.cleanup()

    def finish(self, started: float) -> dict[str, Any]:
        assert self.proxy is not None and self.agent is not None
        self.proxy.restore()
        if self.ws.aggregator is None or not self.ws.aggregator.running():
            self.ws.start_aggregator(port=self.aggregator_port)
        if not self.agent.running():
            self.start_agent()
        self.writer.stopping.set()
        deadline = time.monotonic() + self.s.job_timeout_s
        while self.jobs and time.monotonic() < deadline:
            self.poll_jobs()
            time.sleep(0.05)
        self.poll_jobs()
        self.writer.stop(10)
        written = sum(f.written for f in self.files)
        to_store = written - sum(len(seqs) for seqs in self.expected_lost.values())
        drain_timed_out = False
        try:
            wait_for(lambda: self.all_taken() and stored_event_count(self.ws.store) >= to_store,
                     self.s.drain_timeout_s, f"every file to be read to its end and {to_store} written lines "
                     "to be stored", interval_s=0.2)
        except TimeoutError as exc:
            drain_timed_out = True
            self.errors.append(str(exc))
        self.agent_exit_code = self.agent.stop(signal.SIGTERM, timeout_s=30)
        if self.agent_exit_code != 0:
            self.errors.append(f"the agent exited {self.agent_exit_code} on SIGTERM")
        final_status = read_status(self.spool_dir)
        events = query_store(self.ws.store)
        verify = subprocess.run([*logseal_command(), "verify", str(self.ws.store), "--json"], capture_output=True,
                                text=True, timeout=300, stdin=subprocess.DEVNULL)
        analysis = analyse(events, {f.name: f.written for f in self.files}, self.expected_lost, self.expected_gaps)
        declared = []
        with contextlib.suppress(ValueError):
            declared = json.loads(verify.stdout).get("declared_gaps", [])
        return {
            "seed": self.s.seed,
            "duration_s": self.s.duration_s,
            "wall_time_s": round(time.monotonic() - started, 1),
            "lines_written": written,
            "lines_written_per_file": {f.name: f.written for f in self.files},
            **analysis,
            "gaps_expected": len(self.expected_gaps),
            "expected_gaps": self.expected_gaps,
            "gaps_declared_by_verify": len(declared),
            "verify_exit_code": verify.returncode,
            "verify_problems": (json.loads(verify.stdout).get("problems", []) if verify.stdout.startswith("{")
                                else verify.stdout[-2000:] + verify.stderr[-2000:]),
            "agent_kills": self.counts["agent_kills"],
            "aggregator_restarts": self.counts["aggregator_restarts"],
            "network_cuts": self.counts["network_cuts"],
            "rotations": dict(sorted(self.rotations.items())),
            "proxy": dict(self.proxy.counters),
            "drain_timed_out": drain_timed_out,
            "agent_exit_code": self.agent_exit_code,
            "errors": self.errors,
            "agent_status": summarize_status(final_status),
            "agent_counters_all_runs": sum_counters([*self.agent_snapshots, *([final_status] if final_status else [])]),
            "workdir": str(self.root),
        }

    def all_taken(self) -> bool:
        """Every file under the globs is covered by the spool to its end, and nothing is left to send."""
        for stream, folder in (("syslog", self.logs / "syslog"), ("k8s", self.logs / "k8s")):
            for path in folder.iterdir():
                if not path.name.endswith(".gz") and not drained(self.spool_dir, stream, path):
                    return False
            if any(p.name.endswith(".batch") for p in (self.spool_dir / stream).iterdir()):
                return False
        return True

    def cleanup(self) -> None:
        self.writer.stopping.set()
        for job in self.jobs:
            job.on_timeout()
        self.jobs.clear()
        if self.agent is not None and self.agent.running():
            self.agent.kill()
        if self.ws.aggregator is not None and self.ws.aggregator.running():
            self.ws.aggregator.stop()
        if self.proxy is not None:
            self.proxy.close()
        self._actions.close()


# -- checking the store ------------------------------------------------------------------------------
def query_store(store: Path) -> list[dict[str, Any]]:
    result = subprocess.run([*logseal_command(), "query", str(store), "--json"], capture_output=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"logseal query failed: {result.stderr.decode(errors='replace')[-2000:]}")
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def stored_lines(event: dict[str, Any]) -> list[bytes]:
    exact = (event.get("logseal") or {}).get("original_base64")
    if exact:
        return bytes(base64.b64decode(exact)).split(b"\n")
    original = (event.get("event") or {}).get("original")
    return original.encode().split(b"\n") if isinstance(original, str) else []


def event_order(event: dict[str, Any]) -> tuple[str, int, int]:
    """Where an event sits in its stream: (stream, batch seq, index), from `node:stream:seq:index`."""
    _, stream, seq, index = str(event["event"]["id"]).rsplit(":", 3)
    return stream, int(seq), int(index)


def analyse(events: list[dict[str, Any]], written: dict[str, int], lost: dict[str, set[int]],
            expected_gaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Every written line stored once, in order per written file, except those `lost` on purpose;
    every gap record one of `expected_gaps` (same path, start and end), and each of those found."""
    gaps: list[dict[str, Any]] = []
    foreign: list[str] = []
    seen: dict[str, list[int]] = {name: [] for name in written}
    for event in sorted(events, key=event_order):
        if event.get("event", {}).get("dataset") == "logseal.gap":
            gaps.append({"id": event["event"]["id"], **(event.get("logseal") or {}).get("gap", {})})
            continue
        for line in stored_lines(event):
            match = MARK.search(line)
            name = match.group(1).decode() if match else ""
            if match is None or name not in seen:
                foreign.append(line[:120].decode(errors="replace"))
                continue
            seen[name].append(int(match.group(2)))
    per_file: dict[str, dict[str, Any]] = {}
    for name, seqs in seen.items():
        counts = Counter(seqs)
        first_seen: list[int] = []
        done: set[int] = set()
        for seq in seqs:
            if seq not in done:
                done.add(seq)
                first_seen.append(seq)
        inversions = [(a, b) for a, b in zip(first_seen, first_seen[1:], strict=False) if b < a]
        expected_lost = lost.get(name, set())
        missing = sorted(set(range(written[name])) - done - expected_lost)
        extra = sorted(done - set(range(written[name])))
        per_file[name] = {"written": written[name], "stored_unique": len(done),
                          "duplicates": sum(n - 1 for n in counts.values() if n > 1),
                          "missing": len(missing), "missing_sample": missing[:10],
                          "lost_on_purpose": len(expected_lost), "lost_but_stored": len(expected_lost & done),
                          "not_written": len(extra), "out_of_order": len(inversions),
                          "out_of_order_sample": inversions[:5]}
    unmatched = list(expected_gaps)
    unexpected = []
    for gap in gaps:
        expected = next((g for g in unmatched
                         if (g["path"], g["start"], g["end"]) == (gap.get("path"), gap.get("start"), gap.get("end"))),
                        None)
        if expected is None:
            unexpected.append(gap)
        else:
            unmatched.remove(expected)
    return {
        "gaps_unexpected": unexpected[:10],
        "gaps_expected_not_found": unmatched,
        "lines_stored": sum(len(s) for s in seen.values()),
        "lines_stored_unique": sum(p["stored_unique"] for p in per_file.values()),
        "duplicates": sum(p["duplicates"] for p in per_file.values()),
        "missing": sum(p["missing"] for p in per_file.values()),
        "out_of_order": sum(p["out_of_order"] for p in per_file.values()),
        "foreign_lines": len(foreign),
        "foreign_sample": foreign[:5],
        "gaps_found": len(gaps),
        "gap_records": gaps[:20],
        "per_file": per_file,
    }


def summarize_status(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {}
    return {"acks": status.get("acks"), "batches_sent": status.get("batches_sent"),
            "reconnects": status.get("reconnects"), "spool": status.get("spool"),
            "streams": [{k: s.get(k) for k in ("name", "lines", "events", "batches", "gaps", "counters")}
                        for s in status.get("streams", [])]}


def sum_counters(statuses: list[dict[str, Any]]) -> dict[str, int]:
    """The agent's counters summed over its processes (each from its last status, at most 2 s old at a kill)."""
    total: Counter[str] = Counter()
    for status in statuses:
        total["reconnects"] += int(status.get("reconnects", 0))
        total["batches_sent"] += int(status.get("batches_sent", 0))
        for name, value in (status.get("acks") or {}).items():
            total[f"acks.{name}"] += int(value)
        for stream in status.get("streams", []):
            total["lines"] += int(stream.get("lines", 0))
            total["gaps"] += int(stream.get("gaps", 0))
            for name, value in (stream.get("counters") or {}).items():
                total[name] += int(value)
    return dict(sorted(total.items()))


def failures(summary: dict[str, Any]) -> list[str]:
    """Every check the run must pass, as messages (empty when it passed)."""
    out = list(summary["errors"])
    for name, p in summary["per_file"].items():
        if p["missing"]:
            out.append(f"{name}: {p['missing']} written lines never stored, e.g. seq {p['missing_sample']}")
        if p["duplicates"]:
            out.append(f"{name}: {p['duplicates']} lines stored more than once")
        if p["out_of_order"]:
            out.append(f"{name}: {p['out_of_order']} lines stored out of order, e.g. {p['out_of_order_sample']}")
        if p["lost_but_stored"]:
            out.append(f"{name}: {p['lost_but_stored']} lines lost on purpose were stored all the same")
        if p["not_written"]:
            out.append(f"{name}: {p['not_written']} stored lines were never written")
    if summary["foreign_lines"]:
        out.append(f"{summary['foreign_lines']} stored lines are no written line, e.g. {summary['foreign_sample']}")
    if summary["verify_exit_code"] != 0:
        out.append(f"logseal verify exited {summary['verify_exit_code']}: {str(summary['verify_problems'])[:1000]}")
    if summary["gaps_unexpected"]:
        out.append(f"{len(summary['gaps_unexpected'])} gap records match no loss caused on purpose: "
                   f"{summary['gaps_unexpected'][:5]}")
    if summary["gaps_expected_not_found"]:
        out.append(f"losses caused on purpose without their gap record: {summary['gaps_expected_not_found']}")
    if summary["gaps_declared_by_verify"] != summary["gaps_expected"]:
        out.append(f"verify declares {summary['gaps_declared_by_verify']} gaps, {summary['gaps_expected']} expected")
    return out


def run_chaos(settings: Settings) -> dict[str, Any]:
    summary = Chaos(settings).run()
    summary["failures"] = failures(summary)
    summary["ok"] = not summary["failures"]
    return summary


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds of chaos before the final drain")
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a fresh temporary folder)")
    parser.add_argument("--rate", type=float, default=30.0, help="lines per second per written file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the agent and aggregator on the way out
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="logseal-chaos-"))
    settings = Settings(seed=args.seed, duration_s=args.duration, workdir=workdir, lines_per_s=args.rate,
                        drain_timeout_s=max(120.0, args.duration / 5))
    summary = run_chaos(settings)
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
