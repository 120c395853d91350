"""Small builders shared by the detection tests."""

from __future__ import annotations

import textwrap
from typing import Any

from agent.detect import Detector
from agent.detect.rules import parse_documents


def detector(*yaml_texts: str, **kwargs: Any) -> Detector:
    docs = [d for i, t in enumerate(yaml_texts) for d in parse_documents(textwrap.dedent(t), f"test{i}.yml")]
    return Detector.from_documents(docs, **kwargs)


def k8s(verb: str = "get", resource: str = "pods", user: str = "alice", ts: str = "2026-01-01T00:00:00Z",
        eid: str = "e1", host: str = "cp-1", **audit: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"stage": "ResponseComplete", "verb": verb, "user": {"username": user},
                            "objectRef": {"resource": resource}, "responseStatus": {"code": 200}}
    body.update(audit)
    return {"@timestamp": ts, "event": {"dataset": "kubernetes.audit", "id": eid}, "host": {"name": host},
            "user": {"name": user}, "kubernetes": {"audit": body}}


def auth(action: str, outcome: str, ts: str, eid: str, user: str = "root", ip: str = "203.0.113.7",
         host: str = "node-1", process: str = "sshd", **extra: Any) -> dict[str, Any]:
    return {"@timestamp": ts, "event": {"dataset": "system.auth", "id": eid, "action": action, "outcome": outcome},
            "host": {"name": host}, "user": {"name": user}, "source": {"ip": ip}, "process": {"name": process},
            **extra}


def generic(ts: str, eid: str, **fields: Any) -> dict[str, Any]:
    """An auth-dataset event with arbitrary top-level fields (routes of `product: linux, service: auth`)."""
    return {"@timestamp": ts, "event": {"dataset": "system.auth", "id": eid}, "host": {"name": "n"}, **fields}


def at(seconds: float) -> str:
    minute, sec = divmod(int(seconds), 60)
    hour, minute = divmod(minute, 60)
    return f"2026-01-01T{hour:02d}:{minute:02d}:{sec:02d}Z"
