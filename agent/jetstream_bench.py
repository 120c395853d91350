"""`logseal bench --jetstream URL`: ingest throughput into a JetStream cluster through 1 and 2 aggregators.

For each run: a fresh stream (`LOGSEAL_BENCH_<random>`, removed afterwards), 1 or 2 aggregator
processes with `[store] type = "jetstream"`, and 2 agent processes each tailing its own generated
Kubernetes audit log (half the events each). With 2 aggregators each agent lists a different one
first. The clock runs from agent start until the stream holds every event (counted from the batch
headers of the stream's messages: published, replicated and acked by JetStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nats.errors

from agent.aggregator.jetstream import Names, connect, iter_messages
from agent.aggregator.jetstream_read import servers_of
from agent.bench import _write_log
from agent.errors import LogsealError, StoreError
from agent.keys import load_or_create_key
from agent.localrun import LocalProcess, Workspace, logseal_command, wait_for
from agent.wire import WireError, batch_from_bytes

AGENTS = 2


def start_aggregator(ws: Workspace, name: str, servers: Sequence[str], stream: str, replicas: int,
                     log_key: Path) -> tuple[LocalProcess, int]:
    """An aggregator process on a JetStream store; returns it and its port once it serves."""
    port_file = ws.root / f"{name}.port"
    urls = ", ".join(f'"{u}"' for u in servers)
    config = ws.root / f"{name}.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{ws.root / name}"\ntrusted_keys_dir = "{ws.trusted}"\n'
                      f'port_file = "{port_file}"\naggregator_key = "{log_key}"\n'
                      f'[store]\ntype = "jetstream"\nservers = [{urls}]\nstream = "{stream}"\nreplicas = {replicas}\n')
    proc = LocalProcess(name, [*logseal_command(), "aggregator", "--config", str(config)], ws.root / f"{name}.log")
    proc.start()
    ws.processes.append(proc)
    wait_for(lambda: port_file.exists() or not proc.running(), 60, f"{name} to listen")
    if not proc.running():
        raise LogsealError(f"{name} exited at start: {proc.log_text()[-1500:]}")
    return proc, int(port_file.read_text())


class _Counter:
    """Events stored in a stream so far, read incrementally from its batch messages' headers."""

    def __init__(self, servers: Sequence[str], stream: str) -> None:
        self.servers, self.names = list(servers), Names(stream)
        self.events = 0
        self.batches = 0
        self._next = 1

    async def poll(self) -> int:
        nc = await connect(self.servers, name="logseal-bench")
        try:
            async for msg in iter_messages(nc.jetstream(timeout=10), self.names.stream, self.names.batches,
                                           self._next):
                self._next = msg.metadata.sequence.stream + 1
                try:
                    self.events += batch_from_bytes(msg.data).header.event_count
                    self.batches += 1
                except WireError:
                    continue
        except (nats.errors.TimeoutError, TimeoutError):
            pass  # a fetch timed out (a loaded machine, a leader election): read on from here at the next poll
        finally:
            await nc.close()
        return self.events


async def _check_reachable(servers: Sequence[str]) -> None:
    nc = await connect(servers, name="logseal-bench", timeout_s=5)
    try:
        await nc.jetstream(timeout=5).account_info()
    except (nats.errors.Error, TimeoutError) as exc:
        raise StoreError(f"NATS at {', '.join(servers)} answers but JetStream does not: {exc}") from None
    finally:
        await nc.close()


async def _drop_stream(servers: Sequence[str], stream: str) -> None:
    nc = await connect(servers, name="logseal-bench")
    try:
        js = nc.jetstream(timeout=10)
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # best effort: the bench's own stream
            await js.delete_stream(stream)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_key_value(Names(stream).bucket)
    finally:
        await nc.close()


def _run_once(root: Path, servers: Sequence[str], aggregators: int, events: int, replicas: int,
              logs: list[Path]) -> dict[str, float | int]:
    stream = f"LOGSEAL_BENCH_{secrets.token_hex(4)}"
    ws = Workspace(root / f"aggregators-{aggregators}")
    log_key = root / "log.key"
    try:
        nodes = [f"bench-{i}" for i in range(len(logs))]
        for node in nodes:  # enrolled before the aggregators start: they read the keys at start
            ws.enrol(node)
        ports = [start_aggregator(ws, f"agg{i + 1}", servers, stream, replicas, log_key)[1]
                 for i in range(aggregators)]
        counter = _Counter(servers, stream)
        started = time.perf_counter()
        for i, (node, log_path) in enumerate(zip(nodes, logs, strict=True)):
            order = ports[i % len(ports):] + ports[:i % len(ports)]
            addresses = ", ".join(f'"127.0.0.1:{p}"' for p in order)
            config = ws.root / f"{node}.toml"
            config.write_text(f'node_id = "{node}"\nkey = "{ws.keys / (node + ".key")}"\n'
                              f'spool_dir = "{ws.root / "spool" / node}"\naggregator = [{addresses}]\n'
                              f'[[source]]\ntype = "k8s_audit"\npaths = ["{log_path}"]\n')
            ws.start_agent(config)
        wait_for(lambda: asyncio.run(counter.poll()) >= events, 600,
                 f"{events} events in stream {stream} (logs in {ws.root})", interval_s=0.2)
        seconds = time.perf_counter() - started
        return {"events_per_s": round(events / seconds), "seconds": round(seconds, 2), "batches": counter.batches}
    finally:
        for proc in ws.processes:
            if proc.running():
                proc.stop()
        asyncio.run(_drop_stream(servers, stream))


def run_jetstream_bench(url: str, events: int, replicas: int, as_json: bool) -> int:
    servers = servers_of(url)
    if events < 1000:
        raise LogsealError(f"--events {events}: use at least 1000 for a meaningful figure")
    asyncio.run(_check_reachable(servers))
    figures: dict[str, object] = {"servers": servers, "events": events, "replicas": replicas, "agents": AGENTS}
    with tempfile.TemporaryDirectory(prefix="logseal-jsbench-") as tmp:
        root = Path(tmp)
        load_or_create_key(root / "log.key")
        logs = []
        for i in range(AGENTS):
            path = root / f"audit-{i}.log"
            _write_log(path, events // AGENTS)
            logs.append(path)
        total = events // AGENTS * AGENTS
        figures["events"] = total
        for aggregators in (1, 2):
            run = _run_once(root, servers, aggregators, total, replicas, logs)
            figures[f"aggregators_{aggregators}_events_per_s"] = run["events_per_s"]
            figures[f"aggregators_{aggregators}_seconds"] = run["seconds"]
            figures[f"aggregators_{aggregators}_batches"] = run["batches"]
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0
