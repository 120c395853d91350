"""`logseal demo` runs the whole job with zero configuration and exits 0 only if it verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli


def test_demo_stores_every_line_and_verifies(tmp_path: Path) -> None:
    # The installed console script, as the README's demo command runs it.
    script = Path(sys.executable).parent / "logseal"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agent"]
    result = subprocess.run([*command, "demo", "--workdir", str(tmp_path / "demo")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "verification       intact" in out
    assert "demo passed" in out
    progress = [line.split()[1] for line in out.splitlines() if line.startswith("stored ")]
    counts = [tuple(map(int, p.split("/"))) for p in progress]
    assert len(counts) == 2 and all(stored == expected for stored, expected in counts), progress
    assert counts[1][1] > counts[0][1]  # the samples, then the lines appended live
    summary = int(next(line for line in out.splitlines() if "events stored" in line).split()[-1])
    assert summary == counts[1][1]
    assert run_cli("verify", str(tmp_path / "demo" / "store")).returncode == 0
