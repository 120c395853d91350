"""One sender per receiver type: a batch of items in, one `Result` per item out.

A whole request the receiver rejects for good is split in halves and sent again, down to single
events, so that only the events it refuses land in the dead-letter file (HEC and webhooks answer
per request, not per event). Elasticsearch answers per item, and only those items are judged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.aggregator.forward import formats
from agent.aggregator.forward.config import DEFAULT_ES_INDEX, ForwardConfig
from agent.aggregator.forward.formats import Item, Outcome, Result
from agent.aggregator.forward.transport import HttpClient, SyslogConnection, TransportError, client_context


class Sender(Protocol):
    def send(self, items: Sequence[Item]) -> list[Result]: ...

    def abort(self) -> None:
        """Called from another thread at shutdown: make a `send` blocked on the receiver return."""
        ...

    def close(self) -> None: ...


Attempt = tuple[list[Result], bool]
"""One request's per-item results, and whether the receiver judged the request as a whole."""


def bisect_rejections(items: Sequence[Item], send: Callable[[Sequence[Item]], Attempt]) -> list[Result]:
    """`send(items)`, and while a request of several is rejected as a whole, each half on its own.

    Stops at the first transient failure: everything from there on is RETRY."""
    results, whole = send(items)
    if len(items) < 2 or not whole or not all(r.outcome is Outcome.REJECTED for r in results):
        return results
    mid = len(items) // 2
    left = bisect_rejections(items[:mid], send)
    if left and left[-1].outcome is Outcome.RETRY:
        return left + [left[-1]] * (len(items) - mid)
    return left + bisect_rejections(items[mid:], send)


class SyslogSender:
    def __init__(self, config: ForwardConfig) -> None:
        context = client_context(config.tls_ca, config.tls_insecure) if config.use_tls else None
        self.conn = SyslogConnection(config.address, config.timeout_s, context)

    def send(self, items: Sequence[Item]) -> list[Result]:
        try:
            self.conn.send(formats.syslog_frames(items))
        except TransportError as exc:
            return [Result(Outcome.RETRY, str(exc))] * len(items)
        return [formats.ACCEPTED] * len(items)

    def abort(self) -> None:
        self.conn.abort()

    def close(self) -> None:
        self.conn.close()


class _HttpSender:
    content_type = "application/json"

    def __init__(self, config: ForwardConfig, url: str, token: str) -> None:
        context = client_context(config.tls_ca, config.tls_insecure) if config.use_tls else None
        self.config = config
        self.client = HttpClient(url, config.timeout_s, context)
        self.token = token

    def headers(self, items: Sequence[Item]) -> dict[str, str]:
        return {"Content-Type": self.content_type}

    def body(self, items: Sequence[Item]) -> bytes:
        raise NotImplementedError

    def judge(self, items: Sequence[Item], status: int, body: bytes) -> Attempt:
        return [formats.http_outcome(status, body)] * len(items), True

    def _send_once(self, items: Sequence[Item]) -> Attempt:
        try:
            status, body = self.client.post(self.body(items), self.headers(items))
        except TransportError as exc:
            return [Result(Outcome.RETRY, str(exc))] * len(items), True
        return self.judge(items, status, body)

    def send(self, items: Sequence[Item]) -> list[Result]:
        return bisect_rejections(items, self._send_once)

    def abort(self) -> None:
        self.client.abort()

    def close(self) -> None:
        self.client.close()


class HecSender(_HttpSender):
    def headers(self, items: Sequence[Item]) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Authorization": f"Splunk {self.token}"}

    def body(self, items: Sequence[Item]) -> bytes:
        return formats.hec_body(items, self.config.index, self.config.sourcetype)


class BulkSender(_HttpSender):
    content_type = "application/x-ndjson"

    def headers(self, items: Sequence[Item]) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.token:
            headers["Authorization"] = f"ApiKey {self.token}"
        return headers

    def body(self, items: Sequence[Item]) -> bytes:
        return formats.bulk_body(items, self.config.index or DEFAULT_ES_INDEX)

    def judge(self, items: Sequence[Item], status: int, body: bytes) -> Attempt:
        if status != 200:
            return super().judge(items, status, body)
        try:
            return formats.parse_bulk_response(body, len(items)), False
        except ValueError as exc:
            return [Result(Outcome.RETRY, f"unreadable _bulk response: {exc}")] * len(items), True


class WebhookSender(_HttpSender):
    def headers(self, items: Sequence[Item]) -> dict[str, str]:
        key = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()[:32]
        headers = {"Content-Type": self.content_type, "Idempotency-Key": key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def body(self, items: Sequence[Item]) -> bytes:
        return formats.webhook_body(items)


def make_sender(config: ForwardConfig) -> Sender:
    token = config.read_token()
    if config.type == "syslog":
        return SyslogSender(config)
    if config.type == "splunk_hec":
        return HecSender(config, config.url, token)
    if config.type == "elasticsearch":
        return BulkSender(config, config.url.rstrip("/") + "/_bulk", token)
    return WebhookSender(config, config.url, token)
