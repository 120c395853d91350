"""Stores filled through the real ingest path with events the real normalizers made from the samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from agent.normalize import NormalizeOptions, SourceContext, assembler_for
from agent.normalize.common import Event
from agent.seal import GENESIS, ChainHead, Sealer
from agent.wire import batch_to_bytes
from tests.aggregator.storekit import Kit

SAMPLES = Path(__file__).parents[3] / "agent" / "samples"
RECEIVED = "2026-11-26T10:00:00.000000Z"
SAMPLE_FILES = {"k8s_audit": "k8s-audit.log", "syslog": "auth.log", "auditd": "audit.log"}


def normalized(source_type: str, host: str = "node-1") -> list[Event]:
    """The events `logseal normalize --type SOURCE_TYPE` prints for the packaged sample, as decoded from a store."""
    path = SAMPLES / SAMPLE_FILES[source_type]
    assembler = assembler_for(source_type, SourceContext(host_name=host, path=str(path)), NormalizeOptions())
    out: list[Event] = []
    offset = 0
    for line in path.read_bytes().split(b"\n")[:-1]:
        out += assembler.feed(line, offset, RECEIVED)
        offset += len(line) + 1
    out += assembler.flush(RECEIVED, force=True)
    return [orjson.loads(orjson.dumps(e)) for e in out]  # as stored (the audit record is a JSON fragment)


def store(kit: Kit, events: list[Event], node: str = "node-1", stream: str = "auth", per_batch: int = 4) -> list[str]:
    """Seal `events` in batches of `per_batch` and ingest them; their `event.id`s in store order."""
    ids: list[str] = []
    key = kit.node(node)
    for start in range(0, len(events), per_batch):
        chunk = [dict(e, event=dict(e["event"])) for e in events[start:start + per_batch]]
        head = kit.heads.get((node, stream), GENESIS)
        sealed = Sealer(node, key).seal(stream, head, chunk)
        kit.heads[(node, stream)] = ChainHead(sealed.header.seq, sealed.batch_hash)
        ack = kit.send(batch_to_bytes(sealed))
        assert ack.status == ack.STORED, ack
        ids += [e["event"]["id"] for e in chunk]
    return ids


def auth_events(n: int) -> list[Event]:
    """`n` sshd logins as the syslog normalizer makes them (cycling through the sample's auth events)."""
    base = [e for e in normalized("syslog") if "authentication" in e["event"].get("category", [])]
    return [dict(base[i % len(base)], message=f"login {i}") for i in range(n)]


def doc_id(doc: dict[str, Any]) -> str:
    return str((doc.get("event") or {}).get("id") or (doc.get("metadata") or {}).get("uid") or "")
