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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agent.errors import ConfigError, LogsealError

if TYPE_CHECKING:
    from agent.aggregator.nats_tls import NatsTls

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"logseal: error: {message}\n")


def _setup_logging(verbose: bool, log_format: str | None = None) -> None:
    if log_format is not None:  # the daemons: one record per line (agent/daemon_log.py)
        from agent.daemon_log import setup

        setup(log_format, verbose)
        return
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


def _nats_tls_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-ca", help="with --jetstream: CA of the NATS servers' certificates (connect over TLS)")
    p.add_argument("--nats-cert", help="with --jetstream: client certificate, for servers that verify clients")
    p.add_argument("--nats-key", help="with --jetstream: the key of --nats-cert")


def _nats_tls_of(args: argparse.Namespace) -> NatsTls | None:
    from agent.aggregator.nats_tls import nats_tls

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    try:
        return nats_tls(path(args.nats_ca), path(args.nats_cert), path(args.nats_key), f"{args.command} --nats")
    except ConfigError as exc:
        raise LogsealError(str(exc)) from None


def _store_or_jetstream(args: argparse.Namespace) -> None:
    """Exactly one of STORE and --jetstream URL (with --stream NAME)."""
    if (args.store is None) == (args.jetstream is None):
        raise LogsealError(f"{args.command}: give either STORE or --jetstream URL --stream NAME")
    if args.jetstream is not None and not args.stream:
        raise LogsealError(f"{args.command} --jetstream: give --stream NAME (the aggregators' [store] stream)")


def _cmd_verify(args: argparse.Namespace) -> int:
    from agent.aggregator.verify import verify_store

    _store_or_jetstream(args)
    if args.jetstream is not None:
        from agent.aggregator.jetstream_read import verify_jetstream

        if args.witness:
            raise LogsealError("verify --jetstream: --witness applies to a local store")
        report = verify_jetstream(args.jetstream, args.stream, Path(args.keys) if args.keys else None,
                                  Path(args.aggregator_pub) if args.aggregator_pub else None, _nats_tls_of(args))
    else:
        report = verify_store(Path(args.store), Path(args.keys) if args.keys else None,
                              Path(args.witness) if args.witness else None,
                              Path(args.aggregator_pub) if args.aggregator_pub else None)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for problem in report.problems:
            print(problem)
        for gap in report.gaps:
            print(gap)
        for line in report.info:
            print(f"info: {line}")
        verdict = "intact" if report.ok else f"{len(report.problems)} problem(s) found"
        if report.gaps:
            verdict += f", {len(report.gaps)} declared gap(s)"
        print(f"{report.store}: {report.batches} batches, {report.events} events, {report.checkpoints} "
              f"checkpoint(s){f', {report.witnessed} witnessed' if report.witnessed else ''}: {verdict}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _cmd_prove(args: argparse.Namespace) -> int:
    from agent.aggregator.prove import prove_event

    bundle = prove_event(Path(args.store), args.event_id)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(out)
    except OSError as exc:
        raise LogsealError(f"--out {out}: cannot write: {exc.strerror}") from None
    print(f"wrote {out}: event {bundle['event_id']}, leaf {bundle['leaf_index']} of a signed tree of "
          f"{bundle['tree_size']} batches; check it with `logseal verify-bundle {out} --aggregator-pub FILE`")
    return EXIT_OK


def _cmd_verify_bundle(args: argparse.Namespace) -> int:
    from agent.bundle import verify_bundle
    from agent.keys import load_public_key

    public_key = load_public_key(Path(args.aggregator_pub))
    try:
        bundle = orjson.loads(Path(args.bundle).read_bytes())
    except OSError as exc:
        raise LogsealError(f"{args.bundle}: cannot read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise LogsealError(f"{args.bundle}: not JSON: {exc}") from None
    problems = verify_bundle(bundle, public_key)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_PROBLEMS
    print(f"{args.bundle}: event {bundle['event_id']} is in batch signed by its node and in the aggregator's "
          f"signed tree of {bundle['tree_size']} batches: valid")
    return EXIT_OK


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the first byte; never overwrite."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise LogsealError(f"{path} already exists; certificates and keys are never overwritten") from None
    except OSError as exc:
        raise LogsealError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _cmd_certs(args: argparse.Namespace) -> int:
    from agent import certs

    now = dt.datetime.now(dt.UTC)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.certs_command == "init":
        cert, key = certs.make_ca(args.name, now, args.days or certs.CA_DAYS)
        _write_new(out / "ca-key.pem", key, 0o600)
        _write_new(out / "ca.pem", cert, 0o644)
        print(f"wrote {out / 'ca.pem'} and {out / 'ca-key.pem'} (private, mode 0600; keep it off the nodes)")
        return EXIT_OK
    ca_dir = Path(args.ca)
    try:
        ca_cert, ca_key = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca-key.pem").read_bytes()
    except OSError as exc:
        raise LogsealError(f"--ca {ca_dir}: needs ca.pem and ca-key.pem (from `logseal certs init`): "
                           f"{exc.strerror}") from None
    days = args.days or certs.LEAF_DAYS
    if args.aggregator == bool(args.node_id):
        raise LogsealError("certs issue: give either --node-id ID (a node's client certificate) or --aggregator "
                           "--san NAME (the aggregator's server certificate)")
    if args.aggregator:
        if not args.san:
            raise LogsealError("certs issue --aggregator: give at least one --san (IP address or DNS name)")
        cert, key = certs.issue_server_cert(ca_cert, ca_key, args.san, now, days)
        name = "aggregator"
    else:
        cert, key = certs.issue_node_cert(ca_cert, ca_key, args.node_id, now, days)
        name = args.node_id
    _write_new(out / f"{name}-key.pem", key, 0o600)
    _write_new(out / f"{name}.pem", cert, 0o644)
    if not (out / "ca.pem").exists():
        _write_new(out / "ca.pem", ca_cert, 0o644)
    print(f"wrote {out / (name + '.pem')} and {out / (name + '-key.pem')} (private, mode 0600), with the CA "
          f"certificate in {out / 'ca.pem'}; use them as [tls] cert, key and ca")
    return EXIT_OK


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
    _store_or_jetstream(args)
    out = sys.stdout
    if args.jetstream is not None:
        from agent.aggregator.jetstream_read import query_jetstream

        events: Iterable[dict[str, Any]] = query_jetstream(args.jetstream, args.stream, flt, _nats_tls_of(args))
    else:
        events = query_events(Path(args.store), flt)
    if not args.json:
        out.write(TABLE_HEADER + "\n")
    for event in events:
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

    if args.jetstream is not None:
        from agent.jetstream_bench import run_jetstream_bench

        return run_jetstream_bench(args.jetstream, events=args.events, replicas=args.replicas, as_json=args.json)
    return run_bench(events=args.events, as_json=args.json)


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from agent.bench import pipeline_worker

    return pipeline_worker(Path(args.config), args.events)


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="the daemon's log on stderr: one JSON object per line (default) or text for a terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logseal", description="Sealed, verifiable audit-log shipping.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("agent", help="run the node agent")
    p.add_argument("--config", required=True, help="agent.toml")
    p.add_argument("--status", action="store_true", help="print what the agent of this config is doing, and exit")
    p.add_argument("--json", action="store_true", help="with --status: the status as JSON")
    _add_log_format(p)
    p.set_defaults(func=_cmd_agent)

    p = sub.add_parser("aggregator", help="run the aggregator")
    p.add_argument("--config", required=True, help="aggregator.toml")
    _add_log_format(p)
    p.set_defaults(func=_cmd_aggregator)

    p = sub.add_parser("keygen", help="create a node key pair")
    p.add_argument("--node-id", required=True)
    p.add_argument("--out", required=True, help="directory for ID.key (0600) and ID.pub")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("verify", help="verify a store offline")
    p.add_argument("store", nargs="?", help="a local store folder (or give --jetstream)")
    p.add_argument("--jetstream", metavar="URL", help="verify a JetStream store: NATS URL(s), comma-separated")
    p.add_argument("--stream", help="with --jetstream: the stream name ([store] stream)")
    _nats_tls_arguments(p)
    p.add_argument("--keys", help="enrolled keys folder (<node_id>.pub) instead of the store's own copies")
    p.add_argument("--witness", help="folder of witnessed checkpoints (the aggregator's witness_dir)")
    p.add_argument("--aggregator-pub", help="the aggregator's public key held apart from the store "
                                            "(default: STORE/aggregator.pub)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("prove", help="write an evidence bundle for one stored event")
    p.add_argument("store")
    p.add_argument("--event-id", required=True, help="the event's event.id, node:stream:seq:index")
    p.add_argument("--out", required=True, help="bundle file to write (JSON)")
    p.set_defaults(func=_cmd_prove)

    p = sub.add_parser("verify-bundle", help="check an evidence bundle offline with public keys only")
    p.add_argument("bundle")
    p.add_argument("--aggregator-pub", required=True, help="the aggregator's public key (PEM)")
    p.set_defaults(func=_cmd_verify_bundle)

    p = sub.add_parser("certs", help="a private CA and the mTLS certificates of nodes and the aggregator")
    certs_sub = p.add_subparsers(dest="certs_command", required=True, parser_class=_Parser)
    c = certs_sub.add_parser("init", help="create a CA: ca.pem and ca-key.pem (0600)")
    c.add_argument("--out", required=True)
    c.add_argument("--name", default="logseal CA", help="the CA's common name")
    c.add_argument("--days", type=int, help="validity in days (default 3650)")
    c.set_defaults(func=_cmd_certs)
    c = certs_sub.add_parser("issue", help="issue a node client or aggregator server certificate")
    c.add_argument("--ca", required=True, help="folder with ca.pem and ca-key.pem")
    c.add_argument("--node-id", help="a node's client certificate, naming it as logseal://node/ID")
    c.add_argument("--aggregator", action="store_true", help="the aggregator's server certificate")
    c.add_argument("--san", action="append", default=[], help="with --aggregator: an IP address or DNS name "
                                                              "(repeat for more)")
    c.add_argument("--out", required=True, help="folder for NAME.pem and NAME-key.pem (0600)")
    c.add_argument("--days", type=int, help="validity in days (default 365)")
    c.set_defaults(func=_cmd_certs)

    p = sub.add_parser("query", help="print stored events")
    p.add_argument("store", nargs="?", help="a local store folder (or give --jetstream)")
    p.add_argument("--jetstream", metavar="URL", help="read a JetStream store: NATS URL(s), comma-separated")
    p.add_argument("--stream", help="with --jetstream: the stream name ([store] stream)")
    _nats_tls_arguments(p)
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
    p.add_argument("--jetstream", metavar="URL", help="instead: ingest throughput into this JetStream cluster "
                                                      "through 1 and 2 aggregators (NATS URLs, comma-separated)")
    p.add_argument("--replicas", type=int, default=3, help="with --jetstream: replicas of the bench stream")
    p.set_defaults(func=_cmd_bench)

    from agent.detect_cli import add_detect_parser

    add_detect_parser(sub)

    from agent.report_cli import add_report_parser

    add_report_parser(sub)

    from agent.retention_cli import add_retention_parsers

    add_retention_parsers(sub)

    p = sub.add_parser("_bench-pipeline", help=argparse.SUPPRESS)
    p.add_argument("config")
    p.add_argument("events", type=int)
    p.set_defaults(func=_cmd_bench_pipeline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, getattr(args, "log_format", None))
    try:
        return int(args.func(args))
    except LogsealError as exc:
        if getattr(args, "log_format", None) == "json" and not getattr(args, "status", False):
            # A daemon's log stays JSON lines to the end: the one-line error is its last record.
            logging.getLogger("logseal").error("cannot start; fix the error and start again", extra={"error": str(exc)})
        else:
            print(f"logseal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as other Unix tools do.
        sys.stderr.close()
        return EXIT_OK
