"""Pure normalizers: one module per log family, `bytes line -> ECS event dict`.

`assembler_for(source_type, ctx, options)` gives the object the pipeline feeds lines to (see
`assemble.py`); `normalizer_for(source_type, ctx)` the plain per-line function of line-oriented
families, `(line, offset, received) -> Event`, where `received` is the canonical ingest timestamp
used when a line carries no usable time of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.normalize import auditd, cri, journald, k8s_audit, syslog
from agent.normalize.assemble import Assembler, HeldLine, LineNormalizer, NormalizeOptions, PerLine
from agent.normalize.common import Event, SourceContext

SOURCE_TYPES: dict[str, Callable[[SourceContext], LineNormalizer]] = {
    "k8s_audit": k8s_audit.make_normalizer,
    "auditd": auditd.make_normalizer,
    "syslog": syslog.make_normalizer,
}

AssemblerFactory = Callable[[SourceContext, NormalizeOptions], Assembler]

ASSEMBLERS: dict[str, AssemblerFactory] = {
    "k8s_audit": k8s_audit.make_assembler,
    "auditd": auditd.make_assembler,
    "syslog": syslog.make_assembler,
    "journald": journald.make_assembler,
    "cri": cri.make_assembler,
}


def normalizer_for(source_type: str, ctx: SourceContext) -> LineNormalizer:
    return SOURCE_TYPES[source_type](ctx)


def assembler_for(source_type: str, ctx: SourceContext, options: NormalizeOptions | None = None) -> Assembler:
    return ASSEMBLERS[source_type](ctx, options or NormalizeOptions())


__all__ = ["ASSEMBLERS", "Assembler", "Event", "HeldLine", "LineNormalizer", "NormalizeOptions", "PerLine",
           "SOURCE_TYPES", "SourceContext", "assembler_for", "normalizer_for"]
