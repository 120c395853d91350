"""What the agent is doing, as one value: for `status.json`, `logseal agent --status`, the summary
logged at shutdown, and the Prometheus metrics (all read the same snapshot)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.metrics import Registry
    from agent.run import Agent

STATUS_FILE = "status.json"


def file_lag(path: str, offset: int) -> int:
    try:
        return max(0, os.stat(path).st_size - offset)
    except OSError:
        return 0


def agent_status(agent: Agent) -> dict[str, Any]:
    streams = []
    for stream in agent.streams:
        counters: dict[str, int] = dict(stream.counters())
        tailer_counters = getattr(stream.tailer, "counters", {})
        counters.update({f"tail.{k}": v for k, v in tailer_counters.items()})
        files = [{"path": p.path, "offset": p.offset, "lag_bytes": file_lag(p.path, p.offset), "cursor": p.cursor}
                 for p in stream.tailer.positions().values()]
        streams.append({"name": stream.name, "type": stream.source.type, "next_seq": stream.next_seq,
                        "lines": stream.stats.lines, "bytes": stream.stats.line_bytes,
                        "events": stream.stats.events_sealed, "batches": stream.stats.batches,
                        "gaps": stream.stats.gaps, "gap_bytes": stream.stats.gap_bytes,
                        "unparsed": stream.stats.unparsed, "files": files, "counters": counters})
    ship = agent.shipper.stats
    spool = agent.spool
    return {
        "time_unix": time.time(),
        "node_id": agent.config.node_id,
        "aggregator": agent.config.aggregator,
        "connected": ship.connected,
        "last_ack_unix": ship.last_ack_unix,
        "acks": {"stored": ship.stored, "duplicate": ship.duplicate, "rejected": ship.rejected},
        "batches_sent": ship.sent,
        "batch_retries": ship.retries,
        "reconnects": ship.reconnects,
        "spool": {"bytes": spool.bytes_used, "limit_bytes": spool.max_bytes, "batches": spool.pending_count(),
                  "oldest_unacked_age_s": spool.oldest_pending_age(), "counters": dict(spool.counters)},
        "reloads": dict(agent.reloads),
        "key_epoch": agent.epochs.epoch,
        "boot_counter": agent.epochs.boot_counter,
        "streams": streams,
    }


def write_status(directory: Path, status: dict[str, Any]) -> None:
    path = directory / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_status(directory: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def format_status(status: dict[str, Any], now: float) -> str:
    age = now - status["time_unix"]
    lines = [f"node {status['node_id']} -> {status['aggregator']}: "
             f"{'connected' if status['connected'] else 'NOT connected'} (status written {age:.0f}s ago)"]
    acks = status["acks"]
    last = status["last_ack_unix"]
    lines.append(f"acks: stored {acks['stored']}, duplicate {acks['duplicate']}, rejected {acks['rejected']}; "
                 f"sent {status['batches_sent']}, reconnects {status['reconnects']}; last ack "
                 + (f"{now - last:.0f}s ago" if last else "never"))
    if "key_epoch" in status:
        lines.append(f"signing key: epoch {status['key_epoch']}, boot {status['boot_counter']}")
    spool = status["spool"]
    lines.append(f"spool: {spool['batches']} batches, {spool['bytes']} of {spool['limit_bytes']} bytes, oldest "
                 f"unacked {spool['oldest_unacked_age_s']:.0f}s; {spool['counters'] or 'no drops'}")
    for stream in status["streams"]:
        lines.append(f"stream {stream['name']} ({stream['type']}): {stream['lines']} lines, {stream['events']} events "
                     f"in {stream['batches']} batches, next seq {stream['next_seq']}, {stream['gaps']} gap records")
        for f in stream["files"]:
            where = f"cursor {f['cursor']}" if f["cursor"] else f"offset {f['offset']}, {f['lag_bytes']} bytes behind"
            lines.append(f"  {f['path']}: {where}")
        if stream["counters"]:
            lines.append("  counters: " + ", ".join(f"{k}={v}" for k, v in sorted(stream["counters"].items())))
    return "\n".join(lines)


def register_agent_metrics(registry: Registry, agent: Agent) -> None:
    """Agent metrics (names in docs/metrics.md), refreshed from one status snapshot per scrape."""
    lines = registry.counter("logseal_agent_lines_read_total", "Complete lines read.", ["source"])
    read_bytes = registry.counter("logseal_agent_bytes_read_total", "Bytes read.", ["source"])
    events = registry.counter("logseal_agent_events_total", "Events handed to sealing.", ["source"])
    batches = registry.counter("logseal_agent_batches_sealed_total", "Batches sealed and spooled.", ["source"])
    gaps = registry.counter("logseal_agent_gaps_total", "Gap records sealed.", ["source", "reason"])
    lost = registry.counter("logseal_agent_lost_bytes_total", "Bytes named as lost by gap records.",
                            ["source", "reason"])
    unparsed = registry.counter("logseal_agent_unparsed_events_total", "Lines shipped as unparsed events.",
                                ["source"])
    retries = registry.counter("logseal_agent_batch_retries_total", "Batches sent again.", ["source"])
    policy = registry.counter("logseal_agent_dropped_by_policy_total", "Audit events dropped by policy.",
                              ["source", "rule"])
    lag = registry.gauge("logseal_agent_file_lag_bytes", "Bytes between read position and end of file.",
                         ["source", "path"])
    watched = registry.gauge("logseal_agent_files_watched", "Files currently tailed.", ["source"])
    spool_bytes = registry.gauge("logseal_agent_spool_bytes", "Bytes in the spool.")
    spool_batches = registry.gauge("logseal_agent_spool_batches", "Batches in the spool.")
    spool_limit = registry.gauge("logseal_agent_spool_limit_bytes", "The spool's size limit.")
    oldest = registry.gauge("logseal_agent_spool_oldest_unacked_age_seconds", "Age of the oldest unacked batch.")
    sent = registry.counter("logseal_agent_batches_sent_total", "Batches sent (resends included).", ["source"])
    acked = registry.counter("logseal_agent_batches_acked_total", "Acks received.", ["source", "status"])
    reconnects = registry.counter("logseal_agent_reconnects_total", "Reconnects to the aggregator.")
    connected = registry.gauge("logseal_agent_connected", "1 while a stream to the aggregator is open.")
    last_ack = registry.gauge("logseal_agent_last_ack_timestamp_seconds", "Unix time of the last ack.")
    quarantined = registry.counter("logseal_agent_quarantined_total", "Spool records quarantined.")
    reloads = registry.counter("logseal_agent_reloads_total", "SIGHUP reloads.", ["result"])
    key_epoch = registry.gauge("logseal_agent_key_epoch", "The node signing key's current epoch.")

    def collect() -> None:
        status = agent_status(agent)
        for stream in status["streams"]:
            name = stream["name"]
            lines.labels(name).mirror(stream["lines"])
            read_bytes.labels(name).mirror(stream["bytes"])
            events.labels(name).mirror(stream["events"])
            batches.labels(name).mirror(stream["batches"])
            gaps.labels(name, "all").mirror(stream["gaps"])
            lost.labels(name, "all").mirror(stream["gap_bytes"])
            unparsed.labels(name).mirror(stream["unparsed"])
            watched.labels(name).set(len(stream["files"]))
            for f in stream["files"]:
                lag.labels(name, f["path"]).set(f["lag_bytes"])
            for key, value in stream["counters"].items():
                if key.startswith("dropped_by_policy."):
                    policy.labels(name, key.split(".", 1)[1]).mirror(value)
        all_streams = "all"
        sent.labels(all_streams).mirror(status["batches_sent"])
        retries.labels(all_streams).mirror(status["batch_retries"])
        for ack_status, value in status["acks"].items():
            acked.labels(all_streams, ack_status).mirror(value)
        reconnects.labels().mirror(status["reconnects"])
        connected.set(1 if status["connected"] else 0)
        last_ack.set(status["last_ack_unix"])
        spool = status["spool"]
        spool_bytes.set(spool["bytes"])
        spool_batches.set(spool["batches"])
        spool_limit.set(spool["limit_bytes"])
        oldest.set(spool["oldest_unacked_age_s"])
        quarantined.labels().mirror(spool["counters"].get("quarantined", 0))
        for result, value in status["reloads"].items():
            reloads.labels(result).mirror(value)
        key_epoch.set(status["key_epoch"])

    registry.on_collect(collect)
