"""The `logseal` command: parses arguments, calls one module per subcommand, maps errors to exits.

Exit codes: 0 success; 1 verification found problems (or the demo did not verify); 2 usage or
configuration error (one line on stderr naming the key or file and the fix).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import zoneinfo
from collections.abc import Sequence
from pathlib import Path

import orjson

from agent.errors import LogsealError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"logseal: error: {message}\n")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_agent(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.run import run_agent

    config = load_agent_config(Path(args.config))
    if args.status:
        import time

        from agent.status import format_status, read_status

        status = read_status(config.spool_dir)
        if status is None:
            raise LogsealError(f"no status in {config.spool_dir}: the agent has not run with this config yet")
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json else
              format_status(status, time.time()))
        return EXIT_OK
    return run_agent(config, Path(args.config))


def _cmd_aggregator(args: argparse.Namespace) -> int:
    from agent.aggregator.server import run_aggregator
    from agent.config import load_aggregator_config

    config = load_aggregator_config(Path(args.config))
    return run_aggregator(config)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from agent.keys import write_keypair

    node_id = args.node_id
    if not node_id or "/" in node_id or ":" in node_id or node_id.startswith("."):
        raise LogsealError(f"--node-id {node_id!r}: must be non-empty, without '/' or ':'")
    out = Path(args.out)
    key = out / f"{node_id}.key"
    if key.exists():
        raise LogsealError(f"{key} already exists; keys are never overwritten (remove it first to rotate)")
    key_path, pub_path = write_keypair(node_id, out)
    print(f"wrote {key_path} (private, mode 0600) and {pub_path}; enrol the node by copying {pub_path.name} "
          "into the aggregator's trusted_keys_dir")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from agent.aggregator.verify import verify_store

    report = verify_store(Path(args.store), Path(args.keys) if args.keys else None)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for problem in report.problems:
            print(problem)
        for gap in report.gaps:
            print(gap)
        verdict = "intact" if report.ok else f"{len(report.problems)} problem(s) found"
        if report.gaps:
            verdict += f", {len(report.gaps)} declared gap(s)"
        print(f"{report.store}: {report.batches} batches, {report.events} events: {verdict}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _cmd_query(args: argparse.Namespace) -> int:
    from agent.aggregator.query import TABLE_HEADER, EventFilter, parse_time, query_events, table_row

    now = dt.datetime.now(dt.UTC)
    try:
        flt = EventFilter(
            since_ns=parse_time(args.since, now) if args.since else None,
            until_ns=parse_time(args.until, now) if args.until else None,
            node=args.node, dataset=args.dataset, user=args.user, action=args.action, limit=args.limit,
        )
    except ValueError as exc:
        raise LogsealError(str(exc)) from None
    out = sys.stdout
    if not args.json:
        out.write(TABLE_HEADER + "\n")
    for event in query_events(Path(args.store), flt):
        out.write(orjson.dumps(event).decode() + "\n" if args.json else table_row(event) + "\n")
    return EXIT_OK


def _cmd_normalize(args: argparse.Namespace) -> int:
    from agent.normalize import ASSEMBLERS, NormalizeOptions, SourceContext, assembler_for
    from agent.pipeline import received_now
    from agent.source_options import load_policy

    if args.type not in ASSEMBLERS:
        raise LogsealError(f"--type {args.type!r}: choose one of {', '.join(ASSEMBLERS)}")
    if args.policy and args.type != "k8s_audit":
        raise LogsealError("--policy applies to --type k8s_audit only")
    secret = NormalizeOptions().redact_key
    if args.redact_key:
        try:
            secret = Path(args.redact_key).read_bytes().strip()
        except OSError as exc:
            raise LogsealError(f"--redact-key {args.redact_key}: cannot read: {exc.strerror}") from None
    try:
        zoneinfo.ZoneInfo(args.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise LogsealError(f"--timezone {args.timezone!r}: not a known IANA time zone (e.g. Europe/Berlin)") from None
    options = NormalizeOptions(k8s_policy=load_policy(Path(args.policy)) if args.policy else None,
                               redact_key=secret, syslog_timezone=args.timezone)
    if args.file == "-":
        data, path = sys.stdin.buffer.read(), "-"
    else:
        try:
            data, path = Path(args.file).read_bytes(), str(Path(args.file).resolve())
        except OSError as exc:
            raise LogsealError(f"{args.file}: cannot read: {exc.strerror}") from None
    assembler = assembler_for(args.type, SourceContext(host_name=args.host, path=path), options)
    received = received_now()
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline ending the last line does not start another
    offset = 0
    out = sys.stdout.buffer
    for line in lines:
        for event in assembler.feed(line, offset, received):
            out.write(orjson.dumps(event) + b"\n")
        offset += len(line) + 1
    for event in assembler.flush(received, force=True):
        out.write(orjson.dumps(event) + b"\n")
    counters = assembler.counters()
    if counters:
        print("counters: " + " ".join(f"{k}={v}" for k, v in sorted(counters.items())), file=sys.stderr)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(Path(args.workdir) if args.workdir else None, keep=not args.cleanup)


def _cmd_bench(args: argparse.Namespace) -> int:
    from agent.bench import run_bench

    return run_bench(events=args.events, as_json=args.json)


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from agent.bench import pipeline_worker

    return pipeline_worker(Path(args.config), args.events)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logseal", description="Sealed, verifiable audit-log shipping.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("agent", help="run the node agent")
    p.add_argument("--config", required=True, help="agent.toml")
    p.add_argument("--status", action="store_true", help="print what the agent of this config is doing, and exit")
    p.add_argument("--json", action="store_true", help="with --status: the status as JSON")
    p.set_defaults(func=_cmd_agent)

    p = sub.add_parser("aggregator", help="run the aggregator")
    p.add_argument("--config", required=True, help="aggregator.toml")
    p.set_defaults(func=_cmd_aggregator)

    p = sub.add_parser("keygen", help="create a node key pair")
    p.add_argument("--node-id", required=True)
    p.add_argument("--out", required=True, help="directory for ID.key (0600) and ID.pub")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("verify", help="verify a store offline")
    p.add_argument("store")
    p.add_argument("--keys", help="enrolled keys folder (<node_id>.pub) instead of the store's own copies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("query", help="print stored events")
    p.add_argument("store")
    p.add_argument("--since", help="RFC 3339 time or age (15m, 2h, 7d)")
    p.add_argument("--until", help="RFC 3339 time or age")
    p.add_argument("--node")
    p.add_argument("--dataset", help="e.g. kubernetes.audit, auditd.log, system.auth")
    p.add_argument("--user", help="user.name")
    p.add_argument("--action", help="event.action, e.g. create, delete, ssh_login")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("normalize", help="print the normalized events of a log file")
    p.add_argument("--type", required=True, help="k8s_audit, auditd, syslog, journald or cri")
    p.add_argument("--policy", help="k8s_audit: an audit.k8s.io/v1 Policy file to apply, as the agent does")
    p.add_argument("--redact-key", help="file with the secret for redaction markers (default: a fixed demo key)")
    p.add_argument("--timezone", default="UTC", help="syslog: zone of RFC 3164 timestamps (IANA name)")
    p.add_argument("--host", default="localhost", help="host.name to put on events")
    p.add_argument("file", help="log file, or - for stdin")
    p.set_defaults(func=_cmd_normalize)

    p = sub.add_parser("demo", help="run agent and aggregator on sample logs, verify, summarize")
    p.add_argument("--workdir", help="use this folder instead of a new temporary one")
    p.add_argument("--cleanup", action="store_true",
                   help="remove the workspace after a passing run (by default it is kept for `query`)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="measure the pipeline on generated Kubernetes audit events")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)

    from agent.detect_cli import add_detect_parser

    add_detect_parser(sub)

    p = sub.add_parser("_bench-pipeline", help=argparse.SUPPRESS)
    p.add_argument("config")
    p.add_argument("events", type=int)
    p.set_defaults(func=_cmd_bench_pipeline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except LogsealError as exc:
        print(f"logseal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as other Unix tools do.
        sys.stderr.close()
        return EXIT_OK
