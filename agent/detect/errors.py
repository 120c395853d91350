"""Errors of the detection engine, part of logseal's one hierarchy (`agent.errors`).

    LogsealError
    └── RuleError        a rule file cannot be loaded: names the file, the rule and the construct
"""

from __future__ import annotations

from agent.errors import LogsealError


class RuleError(LogsealError):
    """A rule is refused at load; never skipped silently."""

    def __init__(self, source: str, rule: str, message: str) -> None:
        self.source = source
        self.rule = rule
        where = f"{source}: rule {rule!r}" if rule else source
        super().__init__(f"{where}: {message}")
