"""RFC 5424 pieces shared by the alert outputs and event forwarding (pure)."""

from __future__ import annotations

SYSLOG_FACILITY = 13
"""RFC 5424 facility 13, "log audit"."""
SYSLOG_SD_ID = "logseal@32473"
"""Structured-data id; 32473 is the private enterprise number RFC 5612 reserves for documentation."""
APP_NAME = "logseal"


def sd_escape(value: str) -> str:
    """An SD-PARAM value: `\\`, `"` and `]` escaped (RFC 5424 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def printable(value: str, limit: int) -> str:
    """A header field: printable US-ASCII only, at most `limit` characters, `-` (NILVALUE) when empty."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def frame_octet_counted(message: bytes) -> bytes:
    """RFC 6587 3.4.1 / RFC 5425: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode() + b" " + message
