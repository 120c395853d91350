"""Detection at the aggregator: Sigma rules and correlations over normalized events.

Modules (pure unless noted): `values` (modifiers), `condition` (grammar), `fields` (logsource
routes and field mappings, the per-event `View`), `rules` (documents compiled), `codegen` (a
detection as one generated function), `matcher` (index and prefilter),
`correlation` (windows and state), `alert` (the alert value), `engine` (the `Detector`),
`load` (reads rule files: I/O), `bench` (throughput).
"""

from agent.detect.alert import Alert
from agent.detect.correlation import Limits
from agent.detect.engine import Detector
from agent.detect.errors import RuleError

__all__ = ["Alert", "Detector", "Limits", "RuleError"]
