"""`logseal detect` offline: raw logs, normalized JSON lines, usage errors; and the detect modules' purity."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from agent.detect_cli import run_detect

FALCO = Path(__file__).parent.parent / "data" / "falco"
AGENT = Path(__file__).parent.parent.parent / "agent" / "detect"


def alerts(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_raw_logs_with_type(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_detect(["--rules", "builtin:kubernetes", "--type", "k8s_audit", str(FALCO / "exec_pod.json")])
    got = alerts(capsys.readouterr().out)
    assert code == 0
    assert "Attach/Exec Pod" in {a["rule"]["name"] for a in got}  # type: ignore[index]
    assert all(a["rule"]["license"] in ("DRL-1.1", "Apache-2.0") for a in got)  # type: ignore[index]


def test_normalized_json_lines_without_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    event = {"@timestamp": "2026-01-01T00:00:00Z", "event": {"dataset": "logseal.security", "id": "n:s:1:0",
                                                              "action": "chain_break"},
             "logseal": {"node": "w1", "verdict": "CHAIN_BROKEN"}}
    events.write_text(json.dumps(event) + "\n\n")
    assert run_detect(["--rules", "builtin:logseal", str(events)]) == 0
    got = alerts(capsys.readouterr().out)
    assert [(a["rule"]["name"], a["logseal"]["alert"]["event_ids"]) for a in got] == [  # type: ignore[index]
        ("Hash Chain Break", ["n:s:1:0"])]


@pytest.mark.parametrize(("argv", "message"), [
    (["--rules", "builtin:nope", "f"], "no such pack"),
    (["--rules", "builtin:linux"], "nothing to read"),
    (["--rules", "builtin:linux", "--since", "1h", "f"], "--since and --until apply to --store only"),
    (["--rules", "builtin:linux", "/no/such/file"], "cannot read"),
    (["--rules", "builtin:linux", "--type", "bogus", str(FALCO / "exec_pod.json")], "--type 'bogus'"),
    (["--rules", "builtin:linux", str(FALCO / "fal_01_003.json"), str(FALCO / "README.md")], "cannot read"),
    (["--rules", "/no/rules.yml", "f"], "no such file or folder"),
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_detect(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_raw_lines_without_type_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_detect(["--rules", "builtin:linux", str(FALCO / "fal_01_003.json")]) == 0  # {"kind": 0} is JSON
    path = FALCO / "expected_firings.tsv"
    assert run_detect(["--rules", "builtin:linux", str(path)]) == 2
    assert "not a JSON event (raw logs need --type)" in capsys.readouterr().err


PURE = ("values", "condition", "fields", "rules", "matcher", "correlation", "alert", "engine")


@pytest.mark.parametrize("module", PURE)
def test_the_engine_modules_do_no_io(module: str) -> None:
    tree = ast.parse((AGENT / f"{module}.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"os", "socket", "asyncio", "grpc", "pathlib", "time", "subprocess"}
