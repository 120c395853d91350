"""Fixtures of the deployment tests: the .deb is built once per session and extracted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def need_tool(name: str) -> str:
    """The path of a tool the test needs. Missing is a failure, not a skip: .ci/run installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; scripts/test.sh (run by .ci/run) installs it")
    return path


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("dpkg-deb")
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([str(ROOT / "packaging" / "build-deb.sh"), "--out", str(out), "--python", sys.executable],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    return path


@pytest.fixture(scope="session")
def deb_tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files, unpacked with dpkg-deb as dpkg would lay them out under /."""
    tree = tmp_path_factory.mktemp("deb-tree")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=60)
    return tree
