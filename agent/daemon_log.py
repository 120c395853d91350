"""The daemons' own logs: one sentence plus key/values per line, as JSON (default) or as text.

    log.warning("batch rejected", extra={"verdict": "UNKNOWN_NODE", "node": "n1"})
    json: {"time":"2026-11-26T10:00:00.123Z","level":"WARNING","logger":"logseal.security","msg":"batch rejected",
           "verdict":"UNKNOWN_NODE","node":"n1"}
    text: 2026-11-26T10:00:00.123Z WARNING logseal.security: batch rejected verdict=UNKNOWN_NODE node=n1

Key/values travel in `extra=`, never baked into the sentence, so a collector indexes them as fields.
Secrets never reach a line, whatever a call site passes: values under secret-like keys, PEM private
keys, credentials in URLs and `Authorization`-style tokens are masked by `redact` before formatting.
The interactive commands (demo, verify, query ...) print for people and do not use this.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

import orjson

FORMATS = ("json", "text")
REDACTED = "[redacted]"
SECRET_KEY_PARTS = ("token", "password", "passwd", "secret", "authorization", "private_key", "privatekey",
                    "api_key", "apikey", "credential", "cookie")
"""An extra whose key contains one of these (any case) is logged as `[redacted]`, whatever its value."""
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A PEM private key, whole or cut off (RFC 7468 labels: PRIVATE KEY, EC PRIVATE KEY, ...).
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
     "[redacted private key]"),
    # user:password@ in a URL (RFC 3986 userinfo).
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@"), r"\1[redacted]@"),
    # A URL's query string often carries the token (?token=, ?sig=, ?api_key=).
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#]*)\?(?:[^\s#\"']*[^\s#\"':,;.)])?"), r"\1?[redacted]"),
    # Authorization header values (RFC 9110 credentials; Splunk HEC uses "Splunk <token>").
    (re.compile(r"\b(Bearer|Basic|Splunk)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
)
"""Masked in every logged string: the sentence, string values and exception text."""

_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_BASE_FIELDS = ("time", "level", "logger", "msg")


def redact_text(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(key: str, value: Any) -> Any:
    """`value` as it may be logged under `key`: secrets masked, containers walked."""
    if any(part in key.lower() for part in SECRET_KEY_PARTS):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(key, v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return redact_text(str(value))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """time, level, logger, msg, then the call site's key/values (and `exception`), all redacted."""
    time = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
    fields: dict[str, Any] = {"time": time.replace("+00:00", "Z"), "level": record.levelname,
                              "logger": record.name, "msg": redact_text(record.getMessage())}
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and key not in _BASE_FIELDS and not key.startswith("_"):
            fields[key] = redact(key, value)
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        fields["stack"] = redact_text(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped, so a line is a record)."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(record_fields(record), default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        plain = value and not any(c.isspace() or c in "\"=" for c in value)
        return value if plain else orjson.dumps(value).decode()
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: sentence k=v ...`, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        exception = fields.pop("exception", None)
        stack = fields.pop("stack", None)
        head = f"{fields.pop('time')} {fields.pop('level')} {fields.pop('logger')}: {fields.pop('msg')}"
        line = " ".join([head, *(f"{k}={_text_value(v)}" for k, v in fields.items())])
        return "\n".join(part for part in (line, exception, stack) if part)


def setup(log_format: str, verbose: bool = False, stream: TextIO | None = None) -> None:
    """Send every logger (ours, grpc's, asyncio's, warnings) through one handler in `log_format`.

    Uncaught exceptions, in the main thread or any other, are logged as one record too, so a
    crash does not break the one-record-per-line stream. Call it before gRPC starts.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(FORMATS)}")
    # gRPC's C core writes to stderr itself, past this handler; at its default verbosity that is a
    # line per failed TLS handshake (a plaintext or foreign client retrying floods it). Errors stay.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)  # not closed: whoever added it (a test harness) still owns it
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    crash = logging.getLogger("logseal.crash")

    def on_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        crash.critical("uncaught exception; the daemon stops", exc_info=(kind, exc, tb))

    def on_thread_uncaught(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        crash.critical("uncaught exception in a thread", exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                       extra={"thread_name": args.thread.name if args.thread else None})

    sys.excepthook = on_uncaught
    threading.excepthook = on_thread_uncaught
