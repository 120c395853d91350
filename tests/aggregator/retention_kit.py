"""A store filled through the real ingest path, one batch per segment, with an aggregator config whose
[retention] the tests choose, for the retention and legal hold tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.checkpoints import Checkpointer
from agent.aggregator.ingest import Ingestor
from agent.aggregator.store import SEGMENT_HEADER, Store
from agent.config import load_aggregator_config
from agent.keys import public_pem
from agent.seal import GENESIS, ChainHead, Sealer, keyring_from
from agent.wire import batch_to_bytes
from tests.conftest import run_cli

DAY_NS = 86_400 * 10**9
ONE_BATCH_PER_SEGMENT = len(SEGMENT_HEADER) + 1  # the store rotates before every append but the first


def iso(ns: int) -> str:
    """RFC 3339 with microseconds for a time in ns."""
    s, rest = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{rest // 1000:06d}Z"


def days_ago(days: float) -> int:
    return time.time_ns() - int(days * DAY_NS)


def event(ts_ns: int, dataset: str = "system.auth", user: str = "alice",
          action: str = "ssh_login") -> dict[str, object]:
    return {"@timestamp": iso(ts_ns), "event": {"dataset": dataset, "action": action}, "user": {"name": user}}


@dataclass
class RetentionKit:
    """`root/aggregator.toml` (with `retention` as its [retention] table) over `root/store`."""

    root: Path
    retention: str = '[retention]\nmax_age = { "*" = "90d" }\n'
    segment_max_bytes: int = ONE_BATCH_PER_SEGMENT
    node_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    heads: dict[tuple[str, str], ChainHead] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    """The segment of each stored batch, in ingest order."""
    sent: list[list[dict[str, object]]] = field(default_factory=list)
    """The events of each stored batch, in ingest order."""

    def __post_init__(self) -> None:
        self.store_dir = self.root / "store"
        self.trusted = self.root / "trusted"
        self.trusted.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "aggregator.toml"
        self.write_config()
        config = load_aggregator_config(self.config_path)
        self.store = Store(self.store_dir, self.segment_max_bytes)
        self.checkpointer = Checkpointer.from_config(self.store, config, time.time_ns())
        self.ingestor = Ingestor(self.store, keyring_from({}), checkpointer=self.checkpointer)

    def write_config(self, extra: str = "") -> None:
        self.config_path.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{self.store_dir}"\n'
                                    f'trusted_keys_dir = "{self.trusted}"\nport_file = "{self.root / "port"}"\n'
                                    f'{extra}{self.retention}')

    def send(self, events: list[dict[str, object]], node: str = "n1", stream: str = "auth") -> str:
        """Store one batch of `events` from `node`; returns the segment it went to."""
        if node not in self.node_keys:
            self.node_keys[node] = Ed25519PrivateKey.generate()
            (self.trusted / f"{node}.pub").write_bytes(public_pem(self.node_keys[node].public_key()))
            self.ingestor.keyring = keyring_from({n: k.public_key() for n, k in self.node_keys.items()})
        head = self.heads.get((node, stream), GENESIS)
        sealed = Sealer(node, self.node_keys[node]).seal(stream, head, events)
        ack = self.ingestor.handle(batch_to_bytes(sealed), "test", None)
        assert ack.status == pb.Ack.STORED, ack
        self.heads[(node, stream)] = ChainHead(sealed.header.seq, sealed.batch_hash)
        self.segments.append(self.store.segment)
        self.sent.append(events)
        return self.store.segment

    def close(self) -> None:
        """Sign a checkpoint over everything stored (as the aggregator does at shutdown) and close."""
        self.checkpointer.sign(time.time_ns())
        self.store.close()

    def segment_path(self, name: str) -> Path:
        return self.store_dir / "segments" / name

    def retention_cli(self, *args: str) -> dict[str, object]:
        result = run_cli("retention", "--config", str(self.config_path), "--json", *args)
        assert result.returncode == 0, result.stderr
        value = orjson.loads(result.stdout)
        assert isinstance(value, dict)
        return value

    def verify(self) -> tuple[int, dict[str, object], str]:
        """(exit code, --json report, text output) of `logseal verify` on the store."""
        as_json = run_cli("verify", str(self.store_dir), "--json")
        text = run_cli("verify", str(self.store_dir))
        assert as_json.returncode == text.returncode, (as_json.stdout, text.stdout)
        return as_json.returncode, orjson.loads(as_json.stdout), text.stdout

    def query_timestamps(self) -> list[str]:
        result = run_cli("query", str(self.store_dir), "--json")
        assert result.returncode == 0, result.stderr
        return [str(orjson.loads(line)["@timestamp"]) for line in result.stdout.splitlines()]

