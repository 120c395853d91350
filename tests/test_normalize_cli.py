"""`logseal normalize` prints exactly what the agent's assemblers make of a file (so the oracle
comparisons of tests/normalize hold for the command too), for every family, on real data."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agent.normalize import NormalizeOptions, SourceContext, assembler_for
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data"
SAMPLES = Path(__file__).parents[1] / "agent" / "samples"
CASES = [
    ("k8s_audit", SAMPLES / "k8s-audit.log"),
    ("k8s_audit", DATA / "panther" / "k8s_secret_access_denied.jsonl"),
    ("auditd", DATA / "go-libaudit" / "testdata" / "normal.log"),
    ("auditd", DATA / "go-libaudit" / "testdata" / "out_of_order.log"),
    ("syslog", SAMPLES / "auth.log"),
    ("journald", DATA / "journald" / "input-multiline-parser.export"),
    ("journald", DATA / "journald" / "multiple-boots.export"),
    ("cri", SAMPLES / "containers.log"),
    ("cri", DATA / "cri" / "core_unescaping_json.log"),
]


def in_process(source_type: str, path: Path) -> list[dict[str, object]]:
    assembler = assembler_for(source_type, SourceContext(host_name="localhost", path=str(path.resolve())),
                              NormalizeOptions())
    events, offset = [], 0
    received = RECEIVED
    for line in path.read_bytes().split(b"\n")[:-1]:
        events += assembler.feed(line, offset, received)
        offset += len(line) + 1
    events += assembler.flush(received, force=True)
    return [orjson.loads(orjson.dumps(e)) for e in events]


RECEIVED = "2026-11-26T10:00:00.000000Z"


def comparable(printed: dict[str, object], ours: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """Reception time differs between the two runs: it is left out where it stands in for the event's time."""
    if ours.get("@timestamp") == RECEIVED:
        return {**printed, "@timestamp": None}, {**ours, "@timestamp": None}
    return printed, ours


@pytest.mark.parametrize(("source_type", "path"), CASES, ids=[f"{t}-{p.name}" for t, p in CASES])
def test_normalize_command_prints_what_the_agent_makes(source_type: str, path: Path) -> None:
    result = run_cli("normalize", "--type", source_type, str(path))
    assert result.returncode == 0, result.stderr
    printed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert printed, "no events"
    ours = in_process(source_type, path)
    assert len(printed) == len(ours)
    for a, b in zip(printed, ours, strict=True):
        left, right = comparable(a, b)
        assert left == right


def test_normalize_reads_standard_input() -> None:
    import subprocess
    import sys

    data = (SAMPLES / "auth.log").read_bytes()
    result = subprocess.run([sys.executable, "-m", "agent", "normalize", "--type", "syslog", "-"], input=data,
                            capture_output=True, timeout=60)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == data.count(b"\n")


def test_unknown_type_is_a_usage_error() -> None:
    result = run_cli("normalize", "--type", "nginx", str(SAMPLES / "auth.log"))
    assert result.returncode == 2
    assert "choose one of k8s_audit, auditd, syslog, journald, cri" in result.stderr
