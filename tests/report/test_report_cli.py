"""`logseal report`: a store filled by real ingest of real normalized logs, reported as JSON and HTML.

Every expected number is counted here from the input: each raw line below carries the label of what
it is (an authentication failure, a privileged action, ...), and per-node, per-dataset and
per-principal counts come from the events as normalized and sealed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.aggregator.detection import DetectionShell
from agent.aggregator.index_rows import timestamp_ns
from agent.localrun import wait_for
from agent.normalize import SourceContext, assembler_for
from agent.pipeline import gap_event
from agent.seal import GENESIS, ChainHead, Sealer
from agent.tail import Gap
from tests.aggregator.storekit import Kit
from tests.conftest import run_cli

HOSTILE = "<script>alert(1)</script>"
SINCE, UNTIL = "2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z"
RECEIVED = "2026-11-26T12:00:00.000000Z"

FAIL, PRIV, OTHER, OUTSIDE = "auth-failure", "privileged", "other", "outside-the-window"


def _k8s(audit_id: str, at: str, verb: str, user: str, ref: dict[str, str], code: int,
         extra: dict[str, Any] | None = None) -> str:
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
             "stage": "ResponseComplete", "requestURI": "/", "verb": verb,
             "user": {"username": user, "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.5"],
             "objectRef": {"apiVersion": "v1", **ref}, "responseStatus": {"metadata": {}, "code": code},
             "requestReceivedTimestamp": at, "stageTimestamp": at, **(extra or {})}
    return json.dumps(event)


PRIVILEGED_POD = {"level": "Request", "requestObject": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p1"},
                  "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]}}}

K8S = [  # node cp-1, one audit Event a line
    (PRIV, _k8s("a1", "2026-11-26T09:10:00Z", "create", "alice", {"resource": "pods", "namespace": "default",
                                                                    "name": "p1"}, 201, PRIVILEGED_POD)),
    (PRIV, _k8s("a2", "2026-11-26T09:11:00Z", "create", "alice", {"resource": "pods", "subresource": "exec",
                                                                    "namespace": "default", "name": "p1"}, 101)),
    (PRIV, _k8s("a3", "2026-11-26T09:12:00Z", "get", "bob", {"resource": "secrets", "namespace": "default",
                                                               "name": "db"}, 200)),
    (PRIV, _k8s("a4", "2026-11-26T09:13:00Z", "create", "alice", {"resource": "clusterrolebindings", "name": "crb",
                                                                    "apiGroup": "rbac.authorization.k8s.io"}, 201)),
    (FAIL, _k8s("a5", "2026-11-26T09:14:00Z", "list", "mallory", {"resource": "secrets",
                                                                    "namespace": "kube-system"}, 403)),
    (FAIL, _k8s("a6", "2026-11-26T09:15:00Z", "list", "system:anonymous", {"resource": "pods"}, 401)),
    (OTHER, _k8s("a7", "2026-11-26T09:16:00Z", "list", "bob", {"resource": "pods", "namespace": "default"}, 200)),
    (OTHER, _k8s("a8", "2026-11-26T13:00:00Z", "get", "bob", {"resource": "configmaps", "namespace": "default",
                                                                "name": "x"}, 200)),
    (OUTSIDE, _k8s("a9", "2026-11-20T09:00:00Z", "get", "bob", {"resource": "secrets", "namespace": "default",
                                                                  "name": "db"}, 200)),
]

AUTH = [  # node worker-1, /var/log/auth.log
    (OTHER, "Nov 26 09:01:17 worker-1 sshd[3310]: Accepted publickey for ops from 192.0.2.10 port 50312 ssh2"),
    (FAIL, f"Nov 26 09:15:59 worker-1 sshd[3402]: Failed password for invalid user {HOSTILE} from 203.0.113.45 "
           "port 41022 ssh2"),
    (FAIL, "Nov 26 09:16:20 worker-1 sshd[3411]: Failed password for root from 203.0.113.45 port 41090 ssh2"),
    (FAIL, "Nov 26 09:16:24 worker-1 sshd[3411]: Failed password for root from 203.0.113.45 port 41090 ssh2"),
    (PRIV, "Nov 26 09:02:40 worker-1 sudo:      ops : TTY=pts/0 ; PWD=/home/ops ; USER=root ; "
           "COMMAND=/usr/bin/systemctl restart kubelet"),
    (FAIL, "Nov 26 09:31:40 worker-1 sudo:   deploy : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/deploy ; "
           "USER=root ; COMMAND=/bin/bash"),
    (PRIV, "Nov 26 09:40:51 worker-1 su[3650]: (to postgres) ops on pts/0"),
    (FAIL, "Nov 26 09:32:07 worker-1 su[3601]: FAILED SU (to root) deploy on pts/1"),
    (OTHER, "Nov 26 10:20:44 worker-1 sshd[3520]: Received disconnect from 198.51.100.23 port 60144:11: "
            "disconnected by user"),
]

AUDIT = [  # node worker-1, /var/log/audit/audit.log; one label per event (its records)
    (PRIV, ['type=SYSCALL msg=audit(1795683600.100:101): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 '
            'a2=3 a3=4 items=2 ppid=100 pid=200 auid=1000 uid=1000 gid=1000 euid=0 suid=0 fsuid=0 egid=0 sgid=0 '
            'fsgid=0 tty=pts1 ses=5 comm="sudo" exe="/usr/bin/sudo" key="exec"',
            'type=EXECVE msg=audit(1795683600.100:101): argc=3 a0="sudo" a1="cat" a2="/etc/shadow"',
            "type=EOE msg=audit(1795683600.100:101):"]),
    (OTHER, ['type=SYSCALL msg=audit(1795683601.200:102): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 '
             'a2=3 a3=4 items=2 ppid=100 pid=201 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 '
             'egid=1000 sgid=1000 fsgid=1000 tty=pts1 ses=5 comm="grep" exe="/usr/bin/grep" key="exec"',
             'type=EXECVE msg=audit(1795683601.200:102): argc=2 a0="grep" a1="x"',
             "type=EOE msg=audit(1795683601.200:102):"]),
]

LOST = Gap("/var/log/auth.log", 4096, 4608, "truncated before it was read")


def normalize(source_type: str, host: str, path: str, lines: list[str]) -> list[dict[str, Any]]:
    """The events the agent would seal for these lines (the real normalizer), as the store holds them."""
    assembler = assembler_for(source_type, SourceContext(host_name=host, path=path))
    out: list[dict[str, Any]] = []
    offset = 0
    for line in lines:
        out.extend(assembler.feed(line.encode(), offset, RECEIVED))
        offset += len(line) + 1
    out.extend(assembler.flush(RECEIVED, force=True))
    return [orjson.loads(orjson.dumps(e)) for e in out]


@dataclass
class Sent:
    """What went into the store: (node, label, event) for each event."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def in_window(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [x for x in self.events if x[1] != OUTSIDE]


def _ingest(kit: Kit, node: str, stream: str, events: list[dict[str, Any]], heads: dict[str, ChainHead]) -> None:
    sealed = Sealer(node, kit.node(node)).seal(stream, heads.get(stream, GENESIS), events)
    heads[stream] = ChainHead(sealed.header.seq, sealed.batch_hash)
    ack = kit.send(sealed)
    assert ack.status == ack.STORED, ack


@dataclass
class Built:
    store: Path
    sent: Sent
    alerts: list[dict[str, Any]]
    records: list[tuple[str, int, int]]
    batch_nodes: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    directory = tmp_path_factory.mktemp("report") / "store"
    kit = Kit(directory)
    shell = DetectionShell(["builtin:all"], directory, None)  # alerts to STORE/alerts.jsonl, as the aggregator
    kit.ingestor.detection = shell
    sent = Sent()
    batches: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = []
    for label, line in K8S:
        (event,) = normalize("k8s_audit", "cp-1", "/var/log/kube-audit.log", [line])
        batches.append(("cp-1", "k8s", [(label, event)]))
    auth = [(label, event) for label, line in AUTH
            for event in normalize("syslog", "worker-1", "/var/log/auth.log", [line])]
    assert len(auth) == len(AUTH)
    auth.append((OTHER, orjson.loads(orjson.dumps(gap_event(LOST, "worker-1", "2026-11-26T09:50:00.000000Z")))))
    batches.append(("worker-1", "auth", auth))
    for label, records in AUDIT:
        (event,) = normalize("auditd", "worker-1", "/var/log/audit/audit.log", records)
        batches.append(("worker-1", "audit", [(label, event)]))
    heads: dict[tuple[str, str], ChainHead] = {}
    batch_nodes: list[str] = []
    for node, stream, labelled in batches:
        per_node = {s: h for (n, s), h in heads.items() if n == node}
        for i in range(0, len(labelled), 4):  # a few events a batch, several batches a stream
            chunk = labelled[i:i + 4]
            _ingest(kit, node, stream, [e for _, e in chunk], per_node)
            batch_nodes.append(node)
            sent.events.extend((node, label, event) for label, event in chunk)
        heads.update({(node, s): h for s, h in per_node.items()})
    kit.checkpoint()
    wait_for(lambda: shell.stats.events == len(sent.events), 30, "detection to see every stored event")
    alerts_path = directory / "alerts.jsonl"

    def alerts_written() -> int:
        return len(alerts_path.read_bytes().splitlines()) if alerts_path.exists() else 0

    wait_for(lambda: alerts_written() == shell.stats.alerts, 30, "the alerts file to hold every alert")
    shell.close()
    records = kit.records()
    kit.close()
    alerts = [orjson.loads(line) for line in alerts_path.read_bytes().splitlines()]
    yield Built(directory, sent, alerts, records, batch_nodes)


def report_json(store: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("report", str(store), "--since", SINCE, "--until", UNTIL, "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, orjson.loads(result.stdout)


def test_json_counts_equal_what_was_ingested(built: Built) -> None:
    code, report = report_json(built.store)
    assert code == 0
    window = built.sent.in_window()
    assert report["events"] == len(window)
    per_node: dict[str, Counter[str]] = {}
    for node, _, event in window:
        per_node.setdefault(node, Counter())[event["event"]["dataset"]] += 1
    assert report["events_by_node_dataset"] == {n: dict(c) for n, c in per_node.items()}
    assert report["nodes"] == sorted(per_node)
    timeline = report["timeline"]
    for node, counts in per_node.items():
        assert sum(timeline["by_node"][node]) == sum(counts.values())
    assert sum(sum(c) for c in timeline["by_dataset"].values()) == len(window)
    assert report["authentication_failures"]["total"] == sum(1 for _, label, _ in window if label == FAIL)
    assert report["privileged_actions"]["total"] == sum(1 for _, label, _ in window if label == PRIV)
    failed_users = Counter(e["user"]["name"] for _, label, e in window if label == FAIL)
    assert report["authentication_failures"]["by_user"] == dict(failed_users)
    principals = Counter(e["user"]["name"] for _, _, e in window if (e.get("user") or {}).get("name"))
    top = {p["name"]: p["events"] for p in report["top_principals"]}
    assert top == dict(principals.most_common(10))
    for name in ("authentication_failures", "privileged_actions"):
        assert sum(sum(c) for c in report[name]["over_time"].values()) == report[name]["total"]
    gaps = report["gaps"]
    assert gaps["total"] == sum(1 for _, _, e in window if e["event"]["dataset"] == "logseal.gap") == 1
    assert gaps["items"][0]["what"] == LOST.path and gaps["items"][0]["bytes"] == LOST.end - LOST.start


def test_json_alerts_by_rule_and_level_equal_the_alerts_file(built: Built) -> None:
    _, report = report_json(built.store)
    lo, hi = timestamp_ns(SINCE), timestamp_ns(UNTIL)
    in_window = [a for a in built.alerts if lo <= timestamp_ns(a["@timestamp"]) < hi]
    assert in_window, "the ingested events should raise alerts (privileged pod, exec, RBAC change...)"
    assert report["alerts"]["source"] == str(built.store / "alerts.jsonl")
    assert report["alerts"]["total"] == len({a["event"]["id"] for a in in_window})
    assert report["alerts"]["by_level"] == dict(Counter(a["rule"]["level"] for a in in_window))
    by_rule = {r["rule_id"]: r["count"] for r in report["alerts"]["by_rule"]}
    assert by_rule == dict(Counter(a["rule"]["id"] for a in in_window))


def test_coverage_counts_each_nodes_batches(built: Built) -> None:
    _, report = report_json(built.store)
    assert {c["node"]: c["batches"] for c in report["coverage"]} == dict(Counter(built.batch_nodes))


def test_alerts_file_given_or_missing(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    moved = tmp_path / "elsewhere.jsonl"
    (store / "alerts.jsonl").rename(moved)
    _, report = report_json(store)
    assert report["alerts"]["source"] is None and report["alerts"]["total"] == 0
    assert report["alerts"]["note"].startswith("no alerts file given")
    _, given = report_json(store, "--alerts", str(moved))
    assert given["alerts"]["source"] == str(moved) and given["alerts"]["total"] > 0
    missing = run_cli("report", str(store), "--json", "--alerts", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "--alerts" in missing.stderr and missing.stdout == ""


def test_verification_and_retention_sections(built: Built) -> None:
    _, report = report_json(built.store)
    verification = report["verification"]
    assert verification["ok"] is True and verification["status"] == "intact"
    assert verification["batches"] == len(built.records) and verification["checkpoints"] == 1
    assert verification["events"] == len(built.sent.events)
    assert report["retention"] == {"table_present": True, "note": "no retention actions in this period", "actions": [],
                                   "outside_window": 0}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.extend((tag, k, v) for k, v in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_one_self_contained_file_with_plots_and_escapes_log_content(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", str(built.store), "--since", SINCE, "--until", UNTIL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "verification: intact" in result.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    page = out.read_text()
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert parser.tags["svg"] >= 5 and parser.tags["rect"] > 10
    labels = {v for tag, k, v in parser.attrs if tag == "svg" and k == "aria-label"}
    assert {"events by node over time", "events by dataset over time", "events by principal",
            "alerts by level", "alerts by rule"} <= labels
    assert "script" not in parser.tags and "img" not in parser.tags and "link" not in parser.tags
    fetching = [(tag, k, v) for tag, k, v in parser.attrs if k in ("src", "href", "xlink:href", "action", "srcset")]
    assert fetching == []
    assert "url(" not in page and "@import" not in page
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert HOSTILE in "".join(parser.text)  # shown to the reader, as text
    assert "intact" in "".join(parser.text) and "no retention actions" in "".join(parser.text)


@pytest.mark.parametrize("from_end", [80, 20], ids=["payload byte", "signature byte"])
def test_a_tampered_segment_byte_reports_problems_found(built: Built, tmp_path: Path, from_end: int) -> None:
    """The record ends with the batch's payload, its 64-byte signature and a 4-byte CRC."""
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    segment, offset, length = built.records[2]
    path = store / "segments" / segment
    data = bytearray(path.read_bytes())
    data[offset + length - from_end] ^= 0x40  # in the third batch
    path.write_bytes(bytes(data))
    code, report = report_json(store)
    assert code == 1
    assert report["verification"]["status"] == "problems found"
    assert any(p["kind"] == "modified" for p in report["verification"]["problems"])
    (unreadable,) = report["unreadable_batches"]
    assert unreadable["batch"].endswith("#3")
    out = tmp_path / "tampered.html"
    result = run_cli("report", str(store), "--since", SINCE, "--until", UNTIL, "--out", str(out))
    assert result.returncode == 1
    assert "problems found" in out.read_text()


def test_missing_store_and_bad_times_are_usage_errors(tmp_path: Path) -> None:
    missing = run_cli("report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nope" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_store = run_cli("report", str(empty), "--json")
    assert not_a_store.returncode == 2 and "not a logseal store" in not_a_store.stderr
    bad_time = run_cli("report", str(empty), "--since", "yesterday", "--json")
    assert bad_time.returncode == 2 and "--since" in bad_time.stderr
    nowhere = run_cli("report", str(empty))
    assert nowhere.returncode == 2 and "--out" in nowhere.stderr
    assert not (tmp_path / "r.html").exists()


def test_ages_and_a_json_out_file(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run_cli("report", str(built.store), "--since", "36500d", "--out", str(out))  # a century: everything
    assert result.returncode == 0, result.stderr
    assert orjson.loads(out.read_bytes())["events"] == len(built.sent.events)
    assert f"wrote {out}: {len(built.sent.events)} events from 2 node(s)" in result.stdout


def test_retention_actions_are_listed_when_the_store_has_a_retention_table(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    db = sqlite3.connect(store / "index.db")
    db.execute("DROP TABLE retention")  # the columns the report reads, without the store's constraints
    db.execute("CREATE TABLE retention (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, rule TEXT, segment TEXT, "
               "first_batch_id INTEGER, last_batch_id INTEGER, first_leaf INTEGER, last_leaf INTEGER, bytes INTEGER, "
               "note TEXT, signature BLOB)")
    rows = [(timestamp_ns("2026-11-26T20:00:00Z"), "auth older than 400d", "00000000.seg", 1, 9, 0, 8, 4096,
             "expired", b"\x07" * 64),
            (timestamp_ns("2026-11-10T20:00:00Z"), "before the period", "x.seg", 1, 1, 0, 0, 1, "", None)]
    db.executemany("INSERT INTO retention (time_ns, rule, segment, first_batch_id, last_batch_id, first_leaf, "
                   "last_leaf, bytes, note, signature) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    _, report = report_json(store)
    assert report["retention"]["table_present"] is True
    assert [(a["rule"], a["batches"], a["leaves"], a["bytes"], a["signed"]) for a in report["retention"]["actions"]] \
        == [("auth older than 400d", "1..9", "0..8", 4096, True)]
    assert report["retention"]["outside_window"] == 1
    out = tmp_path / "r.html"
    assert run_cli("report", str(store), "--since", SINCE, "--until", UNTIL, "--out", str(out)).returncode == 0
    assert "auth older than 400d" in out.read_text() and "no retention actions" not in out.read_text()
