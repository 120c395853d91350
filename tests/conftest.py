from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.localrun import Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `logseal ARGS` as a separate process, as a user would."""
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
