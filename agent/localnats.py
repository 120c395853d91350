"""A NATS JetStream cluster of real `nats-server` processes on loopback (for tests and `bench`).

Each node gets its own config file, store folder and free ports (client, cluster route, HTTP
monitoring); the cluster is ready when every node's /healthz answers ok and JetStream has a meta
leader. Nodes are stopped by pid, never by name.
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agent.localrun import LocalProcess, wait_for

NATS_SERVER_CANDIDATES = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def nats_server_binary() -> str | None:
    """Path of `nats-server` (Debian package `nats-server`), or None when it is not installed."""
    found = shutil.which("nats-server")
    if found:
        return found
    return next((p for p in NATS_SERVER_CANDIDATES if Path(p).is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    http_port: int
    process: LocalProcess

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@dataclass
class NatsCluster:
    """`size` JetStream servers routed to each other under `root`."""

    root: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)
    # (server certificate, its key, CA of client certificates): clients must connect over TLS with a
    # certificate from that CA. Routes between the nodes stay on loopback without TLS.
    tls: tuple[Path, Path, Path] | None = None

    def start(self, timeout_s: float = 30, attempts: int = 3) -> NatsCluster:
        """Start and wait until ready. A port picked free can be taken by another process before the
        server binds it: such a start is retried on fresh ports, up to `attempts` times."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout_s)
            except TimeoutError:
                lost_port = any("address already in use" in n.process.log_text() for n in self.nodes)
                self.stop()
                self.nodes = []
                if not lost_port or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> NatsCluster:
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (Debian: apt-get install nats-server)")
        ports = [(_free_port(), _free_port(), _free_port()) for _ in range(self.size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{route}" for _, route, _ in ports)
        for i, (client, route, http) in enumerate(ports, 1):
            name = f"n{i}"
            folder = self.root / name
            shutil.rmtree(folder / "js", ignore_errors=True)  # nothing of an earlier attempt
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "nats.conf"
            config.write_text(
                f'server_name: "{name}"\nlisten: "127.0.0.1:{client}"\nhttp: "127.0.0.1:{http}"\nmax_payload: 8MB\n'
                f'jetstream {{\n  store_dir: "{folder / "js"}"\n  max_memory_store: 64MB\n'
                f'  max_file_store: 4GB\n}}\n'
                f'cluster {{\n  name: "logseal"\n  listen: "127.0.0.1:{route}"\n  routes: [{routes}]\n}}\n'
                + (f'tls {{\n  cert_file: "{self.tls[0]}"\n  key_file: "{self.tls[1]}"\n  ca_file: "{self.tls[2]}"\n'
                   '  verify: true\n  timeout: 5\n}\n' if self.tls is not None else ""))
            process = LocalProcess(f"nats {name}", [binary, "-c", str(config)], folder / "nats.log")
            process.start()
            self.nodes.append(NatsNode(name, client, route, http, process))
        wait_for(lambda: all(n.healthy() for n in self.nodes) or not all(n.process.running() for n in self.nodes),
                 timeout_s, f"all {self.size} nats-server nodes to answer /healthz (logs in {self.root}/n*/nats.log)")
        if not all(n.process.running() for n in self.nodes):
            raise TimeoutError(f"a nats-server node exited at start (logs in {self.root}/n*/nats.log)")
        wait_for(self._has_meta_leader, timeout_s,
                 f"the JetStream cluster to elect a meta leader (logs in {self.root}/n*/nats.log)", 0.2)
        return self

    def _has_meta_leader(self) -> bool:
        import json

        for node in self.nodes:
            if not node.process.running():
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/jsz", timeout=1) as reply:
                    info = json.loads(reply.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            leader = (info.get("meta_cluster") or {}).get("leader")
            if leader and len((info.get("meta_cluster") or {}).get("replicas") or []) >= self.size - 1:
                return True
        return False

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All nodes' client URLs, comma-separated (as `--jetstream` and `servers` take them)."""
        return ",".join(self.urls)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.process is not None:
                node.process.stop(timeout_s=10)
