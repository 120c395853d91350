"""The normalizers are pure: no I/O, no clock, no process state; only their inputs decide the event."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

import agent.normalize

from .helpers import RECEIVED, SAMPLES, lines_of

MODULES = sorted(p.stem for p in Path(agent.normalize.__file__).parent.glob("*.py") if p.stem != "__init__")
# Modules that do I/O, reach for the clock or run things: none may be imported by a normalizer.
BANNED_IMPORTS = {"os", "io", "sys", "time", "socket", "asyncio", "subprocess", "pathlib", "shutil", "threading",
                  "urllib", "http", "grpc", "aiofiles", "watchdog", "sqlite3", "tempfile", "random"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "open"}


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_nothing_that_does_io_or_reads_the_clock(module: str) -> None:
    source = (Path(agent.normalize.__file__).parent / f"{module}.py").read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
            assert not roots & BANNED_IMPORTS, f"{module} imports {roots & BANNED_IMPORTS}"
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in BANNED_IMPORTS, f"{module} imports {node.module}"
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            assert name not in FORBIDDEN_CALLS, f"{module} calls {name}()"


@pytest.mark.parametrize(("family", "sample"), [("k8s_audit", "k8s-audit.log"), ("auditd", "audit.log"),
                                                ("syslog", "auth.log")])
def test_same_line_gives_the_same_event_whatever_came_before(family: str, sample: str) -> None:
    ctx = agent.normalize.SourceContext(host_name="n", path="/var/log/x")
    lines = lines_of(SAMPLES / sample)
    forward = [agent.normalize.normalizer_for(family, ctx)(line, offset, RECEIVED) for offset, line in lines]
    fresh = agent.normalize.normalizer_for(family, ctx)
    backward = [fresh(line, offset, RECEIVED) for offset, line in reversed(lines)]
    # Compared as serialized: the Kubernetes audit record is an opaque verbatim fragment in process.
    assert [orjson.dumps(e) for e in forward] == [orjson.dumps(e) for e in reversed(backward)]
