"""Pure normalizers: one module per log family, each `bytes line -> ECS event dict`.

`normalizer_for(source_type, ctx)` returns a callable `(line, offset, received) -> Event` where
`received` is the canonical ingest timestamp used when a line carries no usable time of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.normalize import auditd, k8s_audit, syslog
from agent.normalize.common import Event, SourceContext

LineNormalizer = Callable[[bytes, int, str], Event]

SOURCE_TYPES: dict[str, Callable[[SourceContext], LineNormalizer]] = {
    "k8s_audit": k8s_audit.make_normalizer,
    "auditd": auditd.make_normalizer,
    "syslog": syslog.make_normalizer,
}


def normalizer_for(source_type: str, ctx: SourceContext) -> LineNormalizer:
    return SOURCE_TYPES[source_type](ctx)


__all__ = ["Event", "LineNormalizer", "SOURCE_TYPES", "SourceContext", "normalizer_for"]
