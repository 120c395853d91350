"""What each receiver is sent, and what its answers mean (pure: values in, bytes or verdicts out).

- syslog: one RFC 5424 message per event, `[logseal@32473 id=… dataset=… …]` structured data and
  the document's JSON as MSG, framed by octet counting (RFC 6587 3.4.1, as RFC 5425 requires on TLS).
- splunk_hec: HEC event JSON objects, one after another in one body (the `/services/collector/event`
  protocol), the document as `event`, `event.id` also as the indexed field `event_id`.
- elasticsearch: `_bulk` NDJSON, a `create` action with `_id` = `event.id` before each document, so a
  resent event is refused as a conflict (409) instead of stored twice.
- webhook: one JSON array of documents per POST.

The retry policy is data: `http_outcome` and `bulk_item_outcome` map statuses to `Outcome`s.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agent.aggregator.forward.ocsf import epoch_ms, to_ocsf
from agent.aggregator.syslog_format import (
    APP_NAME,
    SYSLOG_FACILITY,
    SYSLOG_SD_ID,
    frame_octet_counted,
    printable,
    sd_escape,
)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"  # transient: keep the event, back off, send again
    REJECTED = "rejected"  # permanent: dead-letter it and go on


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str = ""


ACCEPTED = Result(Outcome.ACCEPTED)

RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429})
"""Besides every 5xx: statuses that mean "later", not "never"."""
MISCONFIGURED_HTTP_STATUS = frozenset({401, 403, 404})
"""A wrong token or URL: retried (and logged as an error) rather than dead-lettering every event."""
BULK_DUPLICATE_STATUS = 409
"""_bulk `create` of an `_id` already indexed: the event arrived before (at-least-once resend)."""
SEVERITY_BY_OUTCOME = {"failure": 5}
"""RFC 5424 severity: 5 (notice) for failed actions, else 6 (informational)."""


@dataclass(frozen=True)
class Item:
    """One stored event on its way out: the ECS event (for ids and metadata) and the document sent."""

    event: dict[str, Any]
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return str((self.event.get("event") or {}).get("id", ""))

    @property
    def dataset(self) -> str:
        return str((self.event.get("event") or {}).get("dataset", ""))


def document(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The document sent for a stored event: the ECS event itself, or its OCSF mapping."""
    return to_ocsf(event) if fmt == "ocsf" else event


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


# -- syslog -------------------------------------------------------------------------------------------


def syslog_message(item: Item) -> bytes:
    """One RFC 5424 message: header from the event, `[logseal@32473 ...]`, the document's JSON as MSG."""
    ev = item.event.get("event") or {}
    severity = SEVERITY_BY_OUTCOME.get(str(ev.get("outcome", "")), 6)
    host = str((item.event.get("host") or {}).get("name") or "-")
    params = (("id", item.id), ("dataset", item.dataset), ("action", ev.get("action", "")),
              ("outcome", ev.get("outcome", "")))
    sd = f"[{SYSLOG_SD_ID} " + " ".join(f'{k}="{sd_escape(str(v))}"' for k, v in params) + "]"
    header = (f"<{SYSLOG_FACILITY * 8 + severity}>1 {printable(str(item.event.get('@timestamp') or '-'), 64)} "
              f"{printable(host, 255)} {APP_NAME} - {printable(item.dataset, 32)} {sd} ")
    return header.encode() + _json(item.doc)


def syslog_frames(items: Sequence[Item]) -> bytes:
    return b"".join(frame_octet_counted(syslog_message(i)) for i in items)


# -- Splunk HEC ---------------------------------------------------------------------------------------


def hec_event(item: Item, index: str = "", sourcetype: str = "") -> bytes:
    ms = epoch_ms(item.event.get("@timestamp"))
    obj: dict[str, Any] = {
        "time": round(ms / 1000, 3) if ms else None,
        "host": (item.event.get("host") or {}).get("name"),
        "source": ((item.event.get("log") or {}).get("file") or {}).get("path") or "logseal",
        "sourcetype": sourcetype or f"logseal:{item.dataset or 'event'}",
        "index": index or None,
        "event": item.doc,
        "fields": {"event_id": item.id, "dataset": item.dataset},
    }
    return _json({k: v for k, v in obj.items() if v is not None})


def hec_body(items: Sequence[Item], index: str = "", sourcetype: str = "") -> bytes:
    """HEC accepts several event objects in one body, one after another."""
    return b"\n".join(hec_event(i, index, sourcetype) for i in items)


# -- Elasticsearch _bulk ------------------------------------------------------------------------------


def bulk_pair(item: Item, index: str) -> bytes:
    doc = item.doc
    if "@timestamp" not in doc and "@timestamp" in item.event:  # data streams need it (OCSF has `time`)
        doc = {"@timestamp": item.event["@timestamp"], **doc}
    return _json({"create": {"_index": index, "_id": item.id}}) + b"\n" + _json(doc) + b"\n"


def bulk_body(items: Sequence[Item], index: str) -> bytes:
    return b"".join(bulk_pair(i, index) for i in items)


def bulk_item_outcome(status: int, error: Any) -> Result:
    if 200 <= status < 300 or status == BULK_DUPLICATE_STATUS:
        return ACCEPTED
    reason = f"_bulk item status {status}"
    if isinstance(error, dict):
        reason += f": {error.get('type', '')}: {error.get('reason', '')}"
    elif error:
        reason += f": {error}"
    if status >= 500 or status in RETRYABLE_HTTP_STATUS:
        return Result(Outcome.RETRY, reason)
    return Result(Outcome.REJECTED, reason)


def parse_bulk_response(body: bytes, count: int) -> list[Result]:
    """Per-item results of a `_bulk` response to `count` actions; ValueError if it is not one."""
    obj = json.loads(body)
    items = obj.get("items") if isinstance(obj, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(f"expected {count} items in the _bulk response, got "
                         f"{len(items) if isinstance(items, list) else 'none'}")
    results = []
    for entry in items:
        action = next(iter(entry.values()), None) if isinstance(entry, dict) and entry else None
        if not isinstance(action, dict) or not isinstance(action.get("status"), int):
            raise ValueError(f"a _bulk response item without a status: {entry!r:.200}")
        results.append(bulk_item_outcome(action["status"], action.get("error")))
    return results


# -- webhook ------------------------------------------------------------------------------------------


def webhook_body(items: Sequence[Item]) -> bytes:
    return _json([i.doc for i in items])


# -- HTTP statuses ------------------------------------------------------------------------------------


def http_outcome(status: int, body: bytes = b"") -> Result:
    """What a whole-request HTTP status means for the events in it."""
    if 200 <= status < 300:
        return ACCEPTED
    detail = body[:300].decode("utf-8", "replace").strip()
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status >= 500 or status in RETRYABLE_HTTP_STATUS or status in MISCONFIGURED_HTTP_STATUS or status < 200:
        return Result(Outcome.RETRY, reason)
    return Result(Outcome.REJECTED, reason)
