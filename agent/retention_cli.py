"""`logseal retention` and `logseal hold`: apply the store's retention policy now, and manage legal holds.

    logseal retention --config aggregator.toml --dry-run     # what would go, and why; deletes nothing
    logseal retention --config aggregator.toml [--json]      # delete now, with signed records
    logseal hold add --store STORE --reason R [--node N] [--dataset D] [--user U] [--action A]
                     [--since T] [--until T] [--everything]
    logseal hold list --store STORE [--all] [--json]
    logseal hold release --store STORE ID --reason R

They work beside a running aggregator (SQLite locking); the aggregator logs each hold it sees
added or released. Exit 0, or 2 with a one-line message on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agent.aggregator.retention_policy import Hold
from agent.errors import LogsealError

EXIT_OK = 0
BUSY_TIMEOUT_MS = 30_000


def add_retention_parsers(subparsers: Any) -> None:
    """Add the `retention` and `hold` subcommands to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "retention", help="apply the [retention] policy of an aggregator config to its store now")
    p.add_argument("--config", required=True, help="aggregator.toml (its [retention] table and store_dir)")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted and why; delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_retention)

    p = subparsers.add_parser("hold", help="legal holds: keep matching events from retention")
    hold_sub = p.add_subparsers(dest="hold_command", required=True, parser_class=type(p))
    h = hold_sub.add_parser("add", help="hold every stored event matching all the given selectors")
    h.add_argument("--store", required=True)
    h.add_argument("--reason", required=True, help="why (a case number, a ticket); recorded with the hold")
    h.add_argument("--node")
    h.add_argument("--dataset", help="e.g. kubernetes.audit")
    h.add_argument("--user", help="user.name")
    h.add_argument("--action", help="event.action")
    h.add_argument("--since", help="RFC 3339 time or age (15m, 2h, 7d): events at or after it")
    h.add_argument("--until", help="RFC 3339 time or age: events before it")
    h.add_argument("--everything", action="store_true", help="hold the whole store (no selector)")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=_cmd_hold_add)
    h = hold_sub.add_parser("list", help="list legal holds (active ones; --all for released too)")
    h.add_argument("--store", required=True)
    h.add_argument("--all", action="store_true", help="also released holds")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=_cmd_hold_list)
    h = hold_sub.add_parser("release", help="release a legal hold (it stays recorded)")
    h.add_argument("--store", required=True)
    h.add_argument("id", type=int, help="the hold's id (see `logseal hold list`)")
    h.add_argument("--reason", required=True, help="why it is released; recorded with the hold")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=_cmd_hold_release)


def _open_index(store_dir: Path) -> sqlite3.Connection:
    from agent.aggregator.retention import ensure_schema
    from agent.aggregator.store import connect_index

    index = store_dir / "index.db"
    if not index.is_file() or not (store_dir / "segments").is_dir():
        raise LogsealError(f"{store_dir} is not a logseal store (no index.db and segments/)")
    try:
        db = connect_index(index)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        ensure_schema(db)
    except sqlite3.Error as exc:
        raise LogsealError(f"cannot open the index of {store_dir}: {exc}") from None
    return db


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- retention -----------------------------------------------------------------------------------


def _cmd_retention(args: argparse.Namespace) -> int:
    from agent.aggregator.checkpoints import AGGREGATOR_KEY, AGGREGATOR_PUB
    from agent.aggregator.retention import run_retention
    from agent.aggregator.retention_policy import policy_from
    from agent.config import load_aggregator_config
    from agent.keys import load_private_key, public_pem

    config_path = Path(args.config)
    config = load_aggregator_config(config_path)
    if config.retention is None:
        raise LogsealError(f"{config_path}: retention: no [retention] table; add one with max_age and/or "
                           "max_bytes (see docs/retention.md)")
    policy = policy_from(config.retention.max_age, config.retention.max_bytes, f"{config_path}: retention")
    store_dir = config.store_dir
    db = _open_index(store_dir)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        if row is None:
            raise LogsealError(f"{store_dir}: the aggregator has not run on this store yet (no log origin); "
                               "start it once so it has a signing key")
        key = None
        if not args.dry_run:
            key_path = config.aggregator_key or store_dir / AGGREGATOR_KEY
            key = load_private_key(key_path)
            pub = store_dir / AGGREGATOR_PUB
            if pub.exists() and pub.read_bytes() != public_pem(key.public_key()):
                raise LogsealError(f"{key_path}: not the key of {pub}; retention records must be signed by the "
                                   "store's aggregator key (set aggregator_key)")
        try:
            result = run_retention(db, store_dir, policy, key, str(row[0]), time.time_ns(), dry_run=args.dry_run)
        except sqlite3.Error as exc:
            raise LogsealError(f"{store_dir}: retention stopped, nothing more was deleted: {exc}") from None
    finally:
        db.close()
    plan = result.plan
    deleted = {r.segment: r for r in result.records}
    if args.json:
        _print_json({
            "dry_run": result.dry_run, "store": str(store_dir), "segment_bytes": plan.segment_bytes,
            "max_bytes": plan.max_bytes, "finished_interrupted": result.finished,
            "delete": [{"segment": d.segment.name, "rule": d.rule, "reason": d.reason, "bytes": d.segment.bytes,
                        "batches": [d.segment.first_batch, d.segment.last_batch], "events": d.segment.events,
                        "record": deleted[d.segment.name].id if d.segment.name in deleted else None}
                       for d in plan.deletions if result.dry_run or d.segment.name in deleted],
            "keep": [{"segment": d.segment.name, "reason": d.reason, "bytes": d.segment.bytes,
                      "holds": list(d.segment.holds)} for d in plan.kept]})
        return EXIT_OK
    verb = "would delete" if result.dry_run else "deleted"
    if result.dry_run:
        print("dry run: nothing is deleted")
    for segment in result.finished:
        print(f"finished an interrupted deletion: {segment}")
    for d in plan.deletions:
        record = deleted.get(d.segment.name)
        if not result.dry_run and record is None:
            print(f"kept         {d.segment.name}: a legal hold now matches it")
            continue
        signed = f" (record #{record.id})" if record is not None else ""
        print(f"{verb:<12} {d.segment.name}  {d.segment.bytes} bytes  batches {d.segment.first_batch}-"
              f"{d.segment.last_batch}  {d.segment.events} events  {d.rule}{signed}: {d.reason}")
    for d in plan.kept:
        print(f"{'keep':<12} {d.segment.name}  {d.segment.bytes} bytes: {d.reason}")
    gone = [d for d in plan.deletions if result.dry_run or d.segment.name in deleted]
    limit = f", max_bytes {plan.max_bytes}" if plan.max_bytes else ""
    gone_bytes = sum(d.segment.bytes for d in gone)
    print(f"{verb} {len(gone)} segment(s), {gone_bytes} bytes; segment files: {plan.segment_bytes} bytes before, "
          f"{plan.segment_bytes - gone_bytes} after{limit}")
    return EXIT_OK


# --- holds ---------------------------------------------------------------------------------------


def _hold_json(hold: Hold, matches: tuple[int, list[str]] | None = None) -> dict[str, object]:
    value: dict[str, object] = {
        "id": hold.id, "created_ns": hold.created_ns, "released_ns": hold.released_ns, "reason": hold.reason,
        "release_reason": hold.release_reason, "node": hold.node, "dataset": hold.dataset, "user": hold.user,
        "action": hold.action, "since_ns": hold.since_ns, "until_ns": hold.until_ns, "selector": hold.selector()}
    if matches is not None:
        value["matching_events"], value["matching_segments"] = matches
    return value


def _cmd_hold_add(args: argparse.Namespace) -> int:
    from agent.aggregator.query import parse_time
    from agent.aggregator.retention import add_hold, hold_matches
    if not args.reason.strip():
        raise LogsealError("--reason: give why the hold is placed (e.g. a case number)")
    selectors = (args.node, args.dataset, args.user, args.action, args.since, args.until)
    if all(v is None for v in selectors) and not args.everything:
        raise LogsealError("hold add: give at least one of --node, --dataset, --user, --action, --since, --until "
                           "(or --everything to hold the whole store)")
    now = dt.datetime.now(dt.UTC)
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise LogsealError(str(exc)) from None
    if since is not None and until is not None and until <= since:
        raise LogsealError("--until must be after --since")
    db = _open_index(Path(args.store))
    try:
        hold = add_hold(db, Hold(0, 0, args.reason, args.node, args.dataset, args.user, args.action, since, until),
                        time.time_ns())
        matches = hold_matches(db, hold)
    finally:
        db.close()
    if args.json:
        _print_json(_hold_json(hold, matches))
    else:
        print(f"legal hold #{hold.id} added ({hold.selector()}; reason: {hold.reason}): it matches {matches[0]} "
              f"stored event(s) in {len(matches[1])} segment(s), which retention keeps until "
              f"`logseal hold release --store {args.store} {hold.id} --reason ...`")
    return EXIT_OK


def _cmd_hold_list(args: argparse.Namespace) -> int:
    from agent.aggregator.retention import hold_matches, read_holds
    from agent.aggregator.retention_policy import format_ns

    db = _open_index(Path(args.store))
    try:
        holds = read_holds(db, include_released=args.all)
        matches = {h.id: hold_matches(db, h) for h in holds if h.active}
    finally:
        db.close()
    if args.json:
        _print_json([_hold_json(h, matches.get(h.id)) for h in holds])
        return EXIT_OK
    print(f"{'id':>4}  {'created':<20}  {'released':<20}  {'events':>8}  selector; reason")
    for h in holds:
        released = format_ns(h.released_ns) if h.released_ns is not None else "-"
        count = str(matches[h.id][0]) if h.id in matches else "-"
        also = f" (released: {h.release_reason})" if h.release_reason else ""
        print(f"{h.id:>4}  {format_ns(h.created_ns):<20}  {released:<20}  {count:>8}  {h.selector()}; "
              f"{h.reason}{also}")
    return EXIT_OK


def _cmd_hold_release(args: argparse.Namespace) -> int:
    from agent.aggregator.retention import release_hold

    if not args.reason.strip():
        raise LogsealError("--reason: give why the hold is released")
    db = _open_index(Path(args.store))
    try:
        hold = release_hold(db, args.id, args.reason, time.time_ns())
    finally:
        db.close()
    if args.json:
        _print_json(_hold_json(hold))
    else:
        print(f"legal hold #{hold.id} released ({hold.selector()}; reason: {args.reason}); retention may now "
              "delete what only it kept")
    return EXIT_OK
