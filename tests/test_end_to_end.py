"""Agent and aggregator as separate processes over real gRPC: every line stored exactly once."""

from __future__ import annotations

import base64
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agent.localrun import Workspace, wait_for
from tests.conftest import run_cli

SAMPLES = Path(__file__).parents[1] / "agent" / "samples"


def append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def k8s_line(i: int) -> bytes:
    return orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{i}",
                         "stage": "ResponseComplete", "verb": ["get", "create", "delete"][i % 3],
                         "user": {"username": f"user-{i % 5}", "groups": ["system:authenticated"]},
                         "sourceIPs": ["10.0.0.1"], "objectRef": {"resource": "pods", "namespace": "default"},
                         "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2026-11-26T10:00:00.000000Z",
                         "stageTimestamp": "2026-11-26T10:00:00.000001Z"})


def auditd_event(i: int) -> list[bytes]:
    """One auditd event of two records (SYSCALL, EOE) with serial i."""
    stamp = f"msg=audit(1764151200.{i % 1000:03d}:{i + 1}):"
    return [(f"type=SYSCALL {stamp} arch=c000003e syscall=59 success=yes exit=0 pid={1000 + i} uid=0 "
             f"comm=\"ls\" exe=\"/usr/bin/ls\" key=\"exec\"").encode(), f"type=EOE {stamp} ".encode()]


def syslog_line(i: int) -> bytes:
    return (f"Nov 26 10:00:{i % 60:02d} node-1 sshd[{100 + i}]: Failed password for root from 203.0.113.7 "
            f"port {i} ssh2").encode()


def stored_events(store: Path) -> list[dict[str, object]]:
    result = run_cli("query", str(store), "--json")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def stored_lines(event: dict[str, object]) -> list[bytes]:
    """The raw lines an event was made of (all families keep them; see the README)."""
    exact = (event.get("logseal") or {}).get("original_base64")  # type: ignore[union-attr]
    original = base64.b64decode(exact) if exact else event["event"]["original"].encode()  # type: ignore[index]
    return original.split(b"\n")


def assert_exactly_once(store: Path, files: list[Path]) -> None:
    """Each line of each file is in the store exactly once, in order per file, and nothing else is."""
    events = stored_events(store)
    assert not [e for e in events if e["event"]["action"] == "audit-lost"]  # type: ignore[index]
    by_file: dict[str, list[tuple[int, bytes]]] = {}
    for e in events:
        path, offset = e["log"]["file"]["path"], e["log"]["offset"]  # type: ignore[index]
        by_file.setdefault(path, []).extend((offset, line) for line in stored_lines(e))
    assert set(by_file) == {str(p) for p in files}
    for path in files:
        written = path.read_bytes().split(b"\n")[:-1]
        stored = [line for _, line in sorted(by_file[str(path)], key=lambda item: item[0])]
        doubled = [line for line, n in Counter(stored).items() if n > 1]
        assert not doubled, f"{path.name}: stored more than once: {doubled[:3]}"
        missing = Counter(written) - Counter(stored)
        assert not missing, f"{path.name}: {sum(missing.values())} lines never stored, e.g. {list(missing)[:2]}"
        assert stored == written, f"{path.name}: stored out of order"


def verify_ok(store: Path) -> None:
    result = run_cli("verify", str(store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout


def test_every_appended_line_of_every_family_is_stored_exactly_once(workspace: Workspace) -> None:
    logs = workspace.root / "logs"
    logs.mkdir()
    makers = {logs / "apiserver-a.audit": lambda i: [k8s_line(i)], logs / "apiserver-b.audit": lambda i: [k8s_line(i)],
              logs / "audit.log": auditd_event, logs / "auth.log": lambda i: [syslog_line(i)]}
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    config = workspace.agent_config("node-1", [("k8s_audit", str(logs / "*.audit")),
                                               ("auditd", str(logs / "audit.log")),
                                               ("syslog", str(logs / "auth.log"))],
                                    extra="[batch]\nmax_events = 50\nlinger_ms = 20\n",
                                    source_extra="keep_original = true")
    written = 0  # events; each maker call is one event (auditd: two records)

    def add(count: int) -> None:
        nonlocal written
        for path, make in makers.items():
            append(path, [line for i in range(written // 4, written // 4 + count) for line in make(i)])
        written += 4 * count

    add(100)  # present before the agent starts: read from the start
    agent = workspace.start_agent(config)
    for _ in range(3):
        add(37)
        wait_for(lambda want=written: workspace.stored_events() >= want, 60, f"{written} events stored")
    assert agent.stop() == 0, agent.log_text()
    assert aggregator.stop() == 0
    assert workspace.stored_events() == written
    assert_exactly_once(workspace.store, list(makers))
    verify_ok(workspace.store)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_agent_stopped_mid_stream_resumes_without_loss_or_duplicates(workspace: Workspace,
                                                                     stop_signal: signal.Signals) -> None:
    log = workspace.root / "audit.log"
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    config = workspace.agent_config("node-1", [("k8s_audit", str(log))],
                                    extra="[batch]\nmax_events = 200\nlinger_ms = 50\n",
                                    source_extra="keep_original = true")
    first = 20_000
    append(log, [k8s_line(i) for i in range(first)])
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() > 0, 60, "the first batches to be stored")
    code = agent.stop(stop_signal)
    assert code == (-signal.SIGKILL if stop_signal == signal.SIGKILL else 0), agent.log_text()
    stored_at_kill = workspace.stored_events()
    assert stored_at_kill < first, "the agent finished before it could be killed mid-stream; raise `first`"
    append(log, [k8s_line(i) for i in range(first, first + 500)])
    again = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= first + 500, 90, "every line to be stored after restart")
    assert again.stop() == 0, again.log_text()
    assert aggregator.stop() == 0
    assert_exactly_once(workspace.store, [log])
    verify_ok(workspace.store)


def test_aggregator_restart_mid_stream_loses_and_doubles_nothing(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    port = workspace.port
    config = workspace.agent_config("node-1", [("syslog", str(log))],
                                    extra="[batch]\nmax_events = 100\nlinger_ms = 20\n"
                                          "[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n")
    append(log, [syslog_line(i) for i in range(5000)])
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() > 0, 60, "the first batches to be stored")
    assert aggregator.kill() == -signal.SIGKILL
    append(log, [syslog_line(i) for i in range(5000, 6000)])
    restarted = workspace.start_aggregator(port=port)  # same address: the running agent reconnects
    wait_for(lambda: workspace.stored_events() >= 6000, 90, "every line to be stored after the restart")
    assert agent.stop() == 0
    assert restarted.stop() == 0
    assert_exactly_once(workspace.store, [log])
    verify_ok(workspace.store)


def test_lines_that_are_not_utf8_come_back_byte_exact(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    raw = [b"Nov 26 10:00:00 h sshd[1]: user \xff\xfe\xc0\xaf from 10.0.0.1", b"\x00\x01\x02 binary \x80",
           "Nov 26 10:00:01 h su: caf\u00e9 ok".encode()]
    append(log, raw)
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    agent = workspace.start_agent(workspace.agent_config("node-1", [("syslog", str(log))]))
    wait_for(lambda: workspace.stored_events() >= 3, 60, "3 events stored")
    agent.stop()
    aggregator.stop()
    events = sorted(stored_events(workspace.store), key=lambda e: e["log"]["offset"])  # type: ignore[index]
    recovered = [base64.b64decode(e["logseal"]["original_base64"]) if "logseal" in e  # type: ignore[index]
                 else e["event"]["original"].encode() for e in events]  # type: ignore[index]
    assert recovered == raw


def test_batches_signed_by_an_unenrolled_key_are_rejected_and_kept_until_enrolled(workspace: Workspace) -> None:
    log = workspace.root / "audit.log"
    append(log, [line for i in range(10) for line in auditd_event(i)])
    workspace.enrol("node-1")
    (workspace.trusted / "node-1.pub").unlink()  # the aggregator does not know this node yet
    aggregator = workspace.start_aggregator()
    port = workspace.port
    config = workspace.agent_config("node-1", [("auditd", str(log))],
                                    extra="[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n")
    agent = workspace.start_agent(config)
    wait_for(lambda: bool(aggregator.logged("batch rejected", verdict="UNKNOWN_NODE", node="node-1")), 60,
             "the rejection to be logged")
    assert workspace.stored_events() == 0
    aggregator.stop()
    (workspace.trusted / "node-1.pub").write_bytes((workspace.keys / "node-1.pub").read_bytes())
    restarted = workspace.start_aggregator(port=port)  # the agent, still running, retries and gets through
    wait_for(lambda: workspace.stored_events() >= 10, 60, "the spooled batches to be stored once enrolled")
    agent.stop()
    restarted.stop()
    assert_exactly_once(workspace.store, [log])




def test_auditd_events_held_for_their_records_survive_a_kill(workspace: Workspace) -> None:
    """Records of events still waiting in the reorder window at a kill -9 are neither lost nor doubled."""
    log = workspace.root / "audit.log"

    def event_lines(i: int) -> list[bytes]:  # no EOE: each event waits for the 2 s window
        stamp = f"msg=audit(1764151200.{i % 1000:03d}:{i + 1}):"
        return [f"type=SYSCALL {stamp} arch=c000003e syscall=2 success=yes exit=3 pid={100 + i} uid=0".encode(),
                f'type=PATH {stamp} item=0 name="/etc/file-{i}" inode={i} nametype=NORMAL'.encode()]

    append(log, [line for i in range(2000) for line in event_lines(i)])
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    config = workspace.agent_config("node-1", [("auditd", str(log))],
                                    extra="[batch]\nmax_events = 100\nlinger_ms = 20\n")
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() > 0, 60, "the first auditd events to be stored")
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    append(log, [line for i in range(2000, 2100) for line in event_lines(i)])
    again = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 2100, 90, "all 2100 auditd events to be stored")
    assert again.stop() == 0
    assert aggregator.stop() == 0
    assert workspace.stored_events() == 2100
    assert_exactly_once(workspace.store, [log])
    verify_ok(workspace.store)
