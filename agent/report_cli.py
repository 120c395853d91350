"""`logseal report`: the compliance report of a store, as one self-contained HTML file or as JSON.

    logseal report /var/lib/logseal/store --since 30d --out report.html
    logseal report /var/lib/logseal/store --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z --json

The report is written in every case; the exit code then follows `logseal verify`: 0 the store
verified intact, 1 verification found problems (the report says which), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.errors import LogsealError

EXIT_OK = 0
EXIT_PROBLEMS = 1
DEFAULT_SINCE = "30d"


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `report` subcommand to the CLI's subparsers (its `func` takes the parsed namespace)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="compliance report of a store: self-contained HTML with plots, or JSON")
    p.add_argument("store", help="the aggregator's store_dir")
    p.add_argument("--since", default=DEFAULT_SINCE, help=f"RFC 3339 time or age (12h, 30d); default {DEFAULT_SINCE}")
    p.add_argument("--until", help="RFC 3339 time or age; default now")
    p.add_argument("--out", help="file to write: .json gives JSON, anything else HTML (mode 0600)")
    p.add_argument("--json", action="store_true", help="JSON (to stdout without --out)")
    p.add_argument("--alerts", help="the aggregator's alerts file (default: STORE/alerts.jsonl when present)")
    p.add_argument("--keys", help="enrolled keys folder for verification (default: the store's copies)")
    p.add_argument("--witness", help="folder of witnessed checkpoints to verify against")
    p.add_argument("--aggregator-pub", help="the aggregator's public key held apart (default: STORE/aggregator.pub)")
    p.set_defaults(func=_cmd_report)
    return p


def _write(path: Path, data: bytes) -> None:
    """Atomically (temp, fsync, rename), mode 0600: a report names users and addresses."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LogsealError(f"--out {path}: cannot write: {exc.strerror}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    from agent.aggregator.query import parse_time
    from agent.report.collect import ReportRequest, build_summary
    from agent.report.render_html import render_html
    from agent.report.render_json import render_json

    if not args.out and not args.json:
        raise LogsealError("say where the report goes: --out report.html (or .json), or --json for stdout")
    now_ns = time.time_ns()
    now = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC)
    try:
        since_ns = parse_time(args.since, now)
        until_ns = parse_time(args.until, now) if args.until else now_ns
    except ValueError as exc:
        raise LogsealError(f"--since/--until: {exc}") from None
    if since_ns >= until_ns:
        raise LogsealError(f"--since {args.since} is not before --until {args.until or 'now'}")
    store = Path(args.store)
    if not store.is_dir():
        raise LogsealError(f"{store}: no such store directory; give the aggregator's store_dir")
    alerts = Path(args.alerts) if args.alerts else None
    if alerts is not None and not alerts.is_file():
        raise LogsealError(f"--alerts {alerts}: no such file")
    summary = build_summary(ReportRequest(
        store=store, since_ns=since_ns, until_ns=until_ns, now_ns=now_ns, alerts=alerts,
        keys=Path(args.keys) if args.keys else None, witness=Path(args.witness) if args.witness else None,
        aggregator_pub=Path(args.aggregator_pub) if args.aggregator_pub else None))
    as_json = args.json or (args.out is not None and args.out.endswith(".json"))
    data = render_json(summary) if as_json else render_html(summary).encode()
    if args.out:
        _write(Path(args.out), data)
        v = summary.verification
        print(f"wrote {args.out}: {summary.events} events from {len(summary.nodes)} node(s) {summary.since} to "
              f"{summary.until}, {summary.auth_failures.total} authentication failure(s), "
              f"{summary.privileged.total} privileged action(s), "
              f"{summary.alerts.total if summary.alerts.source else 'no'} alert(s), {summary.gaps_total} gap(s); "
              f"verification: {v.status}")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK if summary.verification.ok else EXIT_PROBLEMS
