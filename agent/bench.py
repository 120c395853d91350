"""`logseal bench`: throughput, CPU and memory of the agent pipeline and of the whole path.

Two measurements on the same generated Kubernetes audit log:
- pipeline: one agent process runs tail -> normalize -> seal -> spool (fsync) to the end of the file;
- end to end: an aggregator process and an agent process over real gRPC on loopback, from agent
  start until the aggregator has stored (fsynced, indexed) every event.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

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


def detect_events_per_s(count: int = 20_000) -> int:
    """Sigma evaluation with every built-in pack loaded, on normalized Kubernetes audit events."""
    from agent.detect.bench import detect_throughput
    from agent.normalize import SourceContext, assembler_for

    assembler = assembler_for("k8s_audit", SourceContext(host_name="bench", path="/var/log/audit.log"))
    events = [orjson.loads(orjson.dumps(e)) for i, line in enumerate(generate_audit_events(count))
              for e in assembler.feed(line, i, "2026-11-26T10:00:00.000000Z")]
    return round(detect_throughput(events))


def detect_latency_p99_s(rate: int = 10_000, seconds: float = 4.0, batch: int = 500) -> float:
    """p99 of arrival-to-evaluated time per batch when events arrive at `rate` per second in batches,
    with every built-in pack loaded: the aggregator's detection thread, run on one core."""
    from agent.detect import Detector
    from agent.normalize import SourceContext, assembler_for

    assembler = assembler_for("k8s_audit", SourceContext(host_name="bench", path="/var/log/audit.log"))
    count = int(rate * seconds)
    events = [orjson.loads(orjson.dumps(e)) for i, line in enumerate(generate_audit_events(count))
              for e in assembler.feed(line, i, "2026-11-26T10:00:00.000000Z")]
    detector = Detector.load(["builtin:all"])
    latencies = []
    start = time.perf_counter()
    for first in range(0, len(events), batch):
        arrival = start + first / rate
        now = time.perf_counter()
        if now < arrival:
            time.sleep(arrival - now)  # pacing the simulated arrivals, not synchronisation
        for event in events[first:first + batch]:
            detector.process(event)
        latencies.append(time.perf_counter() - arrival)
    latencies.sort()
    return round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3)


def run_bench(events: int, as_json: bool) -> int:
    if events < 1000:
        from agent.errors import LogsealError

        raise LogsealError(f"--events {events}: use at least 1000 for a meaningful figure")
    figures: dict[str, object] = dict(measure(events))
    figures["normalize_events_per_s"] = normalize_throughput()
    figures["detect_events_per_s"] = detect_events_per_s()
    figures["detect_latency_p99_s_at_10k_events_per_s"] = detect_latency_p99_s()
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0
