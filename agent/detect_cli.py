"""`logseal detect`: run detection rules offline over log files, normalized JSON lines or a store.

    logseal detect --rules builtin:kubernetes --type k8s_audit /var/log/kube-audit.log
    logseal detect --rules rules/ events.jsonl            # normalized events (one JSON object a line)
    logseal detect --rules builtin:all --store /var/lib/logseal/store --since 2h

Alerts are printed as JSON lines on stdout. Exit 0, or 2 with a one-line message on a usage error
(unknown pack, a rule refused at load, an unreadable file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from agent.errors import LogsealError

EXIT_OK = 0
EXIT_USAGE = 2


def add_detect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `detect` subcommand to the CLI's subparsers (its `func` takes the parsed namespace)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "detect", help="run Sigma rules offline over logs, normalized events or a store")
    _arguments(p)
    p.set_defaults(func=_cmd_detect)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", action="append", required=True, metavar="PATH|builtin:PACK",
                   help="rule file, folder or builtin:kubernetes|linux|logseal|all (repeatable)")
    p.add_argument("--type", help="raw logs of this type (k8s_audit, auditd, syslog, journald, cri); "
                                  "without it, FILEs hold normalized events as JSON lines")
    p.add_argument("--host", default="localhost", help="host.name to put on events normalized from raw logs")
    p.add_argument("--store", help="hunt over a logseal store instead of files")
    p.add_argument("--since", help="with --store: RFC 3339 time or age (15m, 2h, 7d)")
    p.add_argument("--until", help="with --store: RFC 3339 time or age")
    p.add_argument("files", nargs="*", metavar="FILE", help="log files, or - for stdin")


def run_detect(argv: Sequence[str]) -> int:
    """`logseal detect ARGS` as a function: parses `argv`, prints alerts, returns the exit code."""
    parser = argparse.ArgumentParser(prog="logseal detect", exit_on_error=False)
    _arguments(parser)
    try:
        args = parser.parse_args(list(argv))
    except (argparse.ArgumentError, SystemExit) as exc:
        if isinstance(exc, argparse.ArgumentError):
            print(f"logseal detect: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(exc, SystemExit) or exc.code else EXIT_OK
    try:
        return _cmd_detect(args)
    except LogsealError as exc:
        print(f"logseal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_detect(args: argparse.Namespace) -> int:
    from agent.detect import Detector

    if args.store and args.files:
        raise LogsealError("give either --store or FILEs, not both")
    if not args.store and not args.files:
        raise LogsealError("nothing to read: give FILEs or --store STORE")
    if (args.since or args.until) and not args.store:
        raise LogsealError("--since and --until apply to --store only")
    if args.type and args.store:
        raise LogsealError("--type applies to FILEs only (a store holds normalized events)")
    detector = Detector.load(args.rules)
    out = sys.stdout
    events = _store_events(args) if args.store else _file_events(args)
    for event in events:
        for alert in detector.process(event):
            out.write(alert.to_json() + "\n")
    for alert in detector.flush():
        out.write(alert.to_json() + "\n")
    out.flush()
    return EXIT_OK


def _read(name: str) -> tuple[bytes, str]:
    if name == "-":
        return sys.stdin.buffer.read(), "-"
    try:
        return Path(name).read_bytes(), str(Path(name).resolve())
    except OSError as exc:
        raise LogsealError(f"{name}: cannot read: {exc.strerror}") from None


def _file_events(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from agent.normalize import ASSEMBLERS, SourceContext, assembler_for

    if args.type and args.type not in ASSEMBLERS:
        raise LogsealError(f"--type {args.type!r}: choose one of {', '.join(ASSEMBLERS)}")
    received = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in args.files:
        data, path = _read(name)
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if not args.type:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise LogsealError(f"{name}:{number}: not a JSON event (raw logs need --type)") from None
                if not isinstance(event, dict):
                    raise LogsealError(f"{name}:{number}: not a JSON object")
                yield event
            continue
        assembler = assembler_for(args.type, SourceContext(host_name=args.host, path=path))
        offset = 0
        for line in lines:
            yield from assembler.feed(line, offset, received)
            offset += len(line) + 1
        yield from assembler.flush(received, force=True)


def _store_events(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from agent.aggregator.query import EventFilter, parse_time, query_events

    now = dt.datetime.now(dt.UTC)
    try:
        flt = EventFilter(since_ns=parse_time(args.since, now) if args.since else None,
                          until_ns=parse_time(args.until, now) if args.until else None)
    except ValueError as exc:
        raise LogsealError(str(exc)) from None
    yield from query_events(Path(args.store), flt)
