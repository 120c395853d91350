"""`logseal demo`: the whole job on one machine with zero configuration.

Makes a workspace with keys and configs, starts a real aggregator and a real agent (separate
processes, gRPC on loopback), feeds them the sample logs shipped in the package plus lines
appended while they run (including an unparseable line and one that is not UTF-8), waits until
every line is stored, stops both, verifies the store offline and prints a summary.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from agent.aggregator.verify import verify_store
from agent.bench import generate_audit_events
from agent.localrun import Workspace, wait_for
from agent.normalize import SourceContext, assembler_for

NODE_ID = "demo-node"
_TIMEOUT_S = 90


def _expected_events(files: dict[str, Path], types: dict[str, str]) -> int:
    """How many events the agent will make of these files: the same assemblers, run here to the end."""
    total = 0
    for name, path in files.items():
        assembler = assembler_for(types[name], SourceContext(host_name=NODE_ID, path=str(path)))
        offset = 0
        for line in path.read_bytes().split(b"\n")[:-1]:
            total += len(assembler.feed(line, offset, "2026-01-01T00:00:00.000000Z"))
            offset += len(line) + 1
        total += len(assembler.flush("2026-01-01T00:00:00.000000Z", force=True))
    return total


def _live_lines(now: dt.datetime) -> dict[str, list[bytes]]:
    epoch = now.timestamp()
    stamp = now.strftime("%b %e %H:%M:%S").encode()
    k8s = generate_audit_events(20, seed=int(epoch))
    k8s.append(b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get","user":{"usern')  # cut off
    auditd = [
        f"type=USER_LOGIN msg=audit({epoch + i:.3f}:{9000 + i}): pid={4000 + i} uid=0 auid=1000 ses={i} "
        f"msg='op=login acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=? addr=198.51.100.{i} terminal=ssh "
        f"res={'success' if i % 3 else 'failed'}'".encode()
        for i in range(1, 6)
    ]
    auth = [stamp + b" demo-host sshd[7001]: Failed password for invalid user admin from 203.0.113.9 port "
            + str(40000 + i).encode() + b" ssh2" for i in range(5)]
    auth.append(stamp + b" demo-host sshd[7002]: Accepted publickey for alice from 198.51.100.4 port 50022 ssh2")
    auth.append(stamp + b" demo-host sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls")
    auth.append(stamp + b" demo-host kernel: bytes that are not UTF-8: \xff\xfe\xc0\xaf end")
    return {"k8s": k8s, "auditd": auditd, "auth": auth}


def _append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def _say(message: str) -> None:
    print(message, flush=True)


def run_demo(workdir: Path | None = None, keep: bool = True) -> int:
    root = workdir or Path(tempfile.mkdtemp(prefix="logseal-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root)
    logs = root / "logs"
    files = {"k8s": logs / "kube-apiserver" / "audit.log", "auditd": logs / "audit" / "audit.log",
             "auth": logs / "auth.log"}
    samples = resources.files("agent") / "samples"
    for name, sample in (("k8s", "k8s-audit.log"), ("auditd", "audit.log"), ("auth", "auth.log")):
        files[name].parent.mkdir(parents=True, exist_ok=True)
        files[name].write_bytes((samples / sample).read_bytes())
    _say(f"workspace      {root}")
    ws.enrol(NODE_ID)
    _say(f"node key       {ws.keys / (NODE_ID + '.key')} (0600), enrolled in {ws.trusted}")
    aggregator = ws.start_aggregator()
    _say(f"aggregator     pid {aggregator.pid}, gRPC on 127.0.0.1:{ws.port}, store {ws.store}")
    types = {"k8s": "k8s_audit", "auditd": "auditd", "auth": "syslog"}
    config = ws.agent_config(NODE_ID, [(types[name], str(path)) for name, path in files.items()],
                             extra="[batch]\nmax_events = 25\nlinger_ms = 100\n")
    agent = ws.start_agent(config)
    _say(f"agent          pid {agent.pid}, tailing {len(files)} files")
    agent_proc = agent
    started = time.monotonic()
    ok = False
    try:
        lines = sum(p.read_bytes().count(b"\n") for p in files.values())
        expected = _expected_events(files, types)
        _say(f"sample lines   {lines} (Kubernetes audit, auditd, auth.log; see agent/samples/NOTICE.md), "
             f"{expected} events (auditd records are grouped into events)")
        wait_for(lambda: ws.stored_events() >= expected, _TIMEOUT_S, "the sample events to be stored")
        _say(f"stored         {ws.stored_events()}/{expected} in {time.monotonic() - started:.1f}s")
        live = _live_lines(dt.datetime.now(dt.UTC))
        for name, new_lines in live.items():
            _append(files[name], new_lines)
        expected = _expected_events(files, types)
        _say(f"appended live  {sum(map(len, live.values()))} lines, one cut-off JSON and one not UTF-8")
        wait_for(lambda: ws.stored_events() >= expected, _TIMEOUT_S, "the live events to be stored")
        stored = ws.stored_events()
        _say(f"stored         {stored}/{expected} in {time.monotonic() - started:.1f}s")
        ok = stored == expected
    except TimeoutError as exc:
        _say(f"error: {exc}; agent log: {agent_proc.log_path}, aggregator log: {aggregator.log_path}")
    finally:
        agent_code = agent.stop()
        aggregator_code = aggregator.stop()
    if agent_code != 0 or aggregator_code != 0:
        _say(f"error: agent exited {agent_code}, aggregator exited {aggregator_code}; logs in {root}")
        ok = False
    report = verify_store(ws.store)
    bytes_in = sum(p.stat().st_size for p in files.values())
    bytes_out = sum(p.stat().st_size for p in (ws.store / "segments").glob("*.seg"))
    _say("")
    _say("summary")
    _say(f"  events stored      {report.events}")
    _say(f"  batches            {report.batches}")
    _say(f"  bytes in (logs)    {bytes_in}")
    _say(f"  bytes out (sealed) {bytes_out}")
    _say(f"  compression ratio  {bytes_in / bytes_out:.2f}" if bytes_out else "  compression ratio  -")
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s)"
    _say(f"  verification       {verdict} (signatures, digests, chains, index)")
    for problem in report.problems:
        _say(f"    {problem}")
    _say(f"  store              {ws.store}")
    command = sys.argv[0] if Path(sys.argv[0]).name == "logseal" else f"{sys.executable} -m agent"
    _say(f"  look at it         {command} query {ws.store} --dataset system.auth")
    _say(f"  verify it again    {command} verify {ws.store}")
    success = ok and report.ok and report.events == expected
    if not keep and success:
        shutil.rmtree(root)
    _say("demo " + ("passed" if success else "FAILED"))
    return 0 if success else 1
