"""The compliance report as JSON: a `Summary` as one document, counts as objects keyed by name. Pure."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from agent.report.summary import Breakdown, Summary

REPORT_FORMAT_VERSION = 1


def _breakdown(b: Breakdown) -> dict[str, Any]:
    return {"total": b.total, "by_kind": dict(b.by_kind), "by_user": dict(b.by_user),
            "by_source_ip": dict(b.by_source), "by_node": dict(b.by_node),
            "items": [asdict(i) for i in b.items], "items_truncated": b.total - len(b.items),
            "over_time": {x.name: list(x.counts) for x in b.over_time}}


def summary_to_dict(s: Summary) -> dict[str, Any]:
    by_node: dict[str, dict[str, int]] = {}
    for node, dataset, count in s.by_node_dataset:
        by_node.setdefault(node, {})[dataset] = count
    v = s.verification
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "store": s.store, "generated": s.generated, "since": s.since, "until": s.until,
        "events": s.events, "nodes": list(s.nodes), "datasets": list(s.datasets),
        "events_by_node_dataset": by_node,
        "timeline": {"bucket_seconds": s.timeline.bucket_s, "starts": list(s.timeline.starts),
                     "by_node": {x.name: list(x.counts) for x in s.timeline.by_node},
                     "by_dataset": {x.name: list(x.counts) for x in s.timeline.by_dataset}},
        "authentication_failures": _breakdown(s.auth_failures),
        "privileged_actions": _breakdown(s.privileged),
        "top_principals": [asdict(p) for p in s.principals],
        "alerts": {"source": s.alerts.source, "note": s.alerts.note, "total": s.alerts.total,
                   "by_level": dict(s.alerts.by_level), "by_rule": [asdict(r) for r in s.alerts.by_rule],
                   "unreadable_lines": s.alerts.unreadable_lines},
        "gaps": {"total": s.gaps_total, "items": [asdict(g) for g in s.gaps],
                 "items_truncated": s.gaps_total - len(s.gaps)},
        "coverage": [asdict(c) for c in s.coverage],
        "rejected_batches": dict(s.rejections),
        "unreadable_batches": [asdict(u) for u in s.unreadable],
        "verification": {"ok": v.ok, "status": v.status, "batches": v.batches, "events": v.events,
                         "tree_size": v.tree_size, "checkpoints": v.checkpoints,
                         "witness_checkpoints": v.witness_checkpoints, "declared_gaps": v.declared_gaps,
                         "problems": [asdict(p) for p in v.problems], "info": list(v.info)},
        "retention": {"table_present": s.retention.present, "note": s.retention.note,
                      "actions": [asdict(a) for a in s.retention.actions],
                      "outside_window": s.retention.outside_window},
    }


def render_json(s: Summary) -> bytes:
    return orjson.dumps(summary_to_dict(s), option=orjson.OPT_INDENT_2) + b"\n"
