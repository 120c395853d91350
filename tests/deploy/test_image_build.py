"""packaging/build-image.sh builds the OCI image and checks it for real, where podman can.

The script builds packaging/Containerfile, then checks the image: uid 10001, HEALTHCHECK on
/healthz, `logseal --help` through the entrypoint, no compiler/make/linker/headers/pip/setuptools/
wheel, and a real aggregator + agent run from the image (every line stored, verify intact, health
check passing, exit 0 on SIGTERM, JSON logs), with the packaged agent.toml and aggregator.toml over
mTLS. Where no container engine can build or run (podman
missing, or the script's exit 3 with its reason), the test is skipped and pytest's summary (-ra)
says why; any other failure of the script fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "packaging" / "build-image.sh"
CANNOT_BUILD_HERE = 3


def test_image_builds_runs_as_non_root_without_build_tools_and_ships_logs(tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("no container engine: podman is not installed, so packaging/build-image.sh cannot run")
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp_path)})  # its work files, build log, mounts
    if result.returncode == CANNOT_BUILD_HERE:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no reason given"
        pytest.skip(f"packaging/build-image.sh: {reason}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "config: user 10001:10001, entrypoint logseal, health check on 127.0.0.1:9600/healthz" in out
    assert "as uid 10001" in out and "no build tools:" in out
    assert "the packaged agent.toml and aggregator.toml, over mTLS, from the image" in out
    stored = re.search(r"stored (\d+)/(\d+) events", out)
    assert stored and stored.group(1) == stored.group(2) and int(stored.group(2)) > 0, out
    assert re.search(r"verify: .*intact", out), out


def tools_without_podman(folder: Path, podman: str | None = None) -> dict[str, str]:
    """An environment whose PATH has the script's tools, and `podman` only as given (a script body)."""
    folder.mkdir()
    for tool in ("dirname", "sed", "head", "tail", "mktemp", "cat", "rm"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    if podman is not None:
        (folder / "podman").write_text(f"#!/bin/sh\n{podman}\n")
        (folder / "podman").chmod(0o755)
    return {**os.environ, "PATH": str(folder), "TMPDIR": str(folder.parent)}


def test_no_engine_is_exit_3_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                            env=tools_without_podman(tmp_path / "bin"))
    assert result.returncode == CANNOT_BUILD_HERE
    assert result.stderr.splitlines()[-1] == ("build-image: cannot build here: podman is not installed "
                                              "(apt-get install podman)")


def test_an_engine_that_cannot_run_is_exit_3_with_its_error(tmp_path: Path) -> None:
    env = tools_without_podman(tmp_path / "bin",
                               'echo "Error: cannot set up namespace: operation not permitted" >&2\nexit 125')
    result = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == CANNOT_BUILD_HERE
    assert result.stderr.splitlines()[-1] == ("build-image: cannot build here: podman info: Error: cannot set up "
                                              "namespace: operation not permitted")


def test_usage_errors_are_exit_2() -> None:
    result = subprocess.run([str(SCRIPT), "--base", "alpine"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--base alpine: official, debian or auto" in result.stderr
