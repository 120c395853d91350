"""systemd/: both units load cleanly in systemd's own parser and are hardened (exposure <= 2.0).

`systemd-analyze verify` and `systemd-analyze security --offline=yes` run against a root tree made of
the unpacked .deb (so the units are checked with the binary the package really installs at the
path they name) plus copies of the host's systemd unit folder and `kill` (for the targets the units
order against and for ExecReload). verify exits 0 even on unknown keys, so any output is a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import need_tool

ROOT = Path(__file__).parents[2]
UNITS = ("logseal-agent.service", "logseal-aggregator.service")
MAX_EXPOSURE = 2.0
_USR_UNITS = Path("/usr/lib/systemd/system")
HOST_UNITS = _USR_UNITS if _USR_UNITS.is_dir() else Path("/lib/systemd/system")


@pytest.fixture(scope="module")
def root(deb_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("systemd-analyze")
    tree = tmp_path_factory.mktemp("systemd-root")
    shutil.copytree(deb_tree, tree, symlinks=True, dirs_exist_ok=True)
    shutil.copytree(HOST_UNITS, tree / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(need_tool("kill"), tree / "usr/bin/kill")
    (tree / "bin").symlink_to("usr/bin")
    # the units must be the repository's, byte for byte
    for unit in UNITS:
        assert (tree / "lib/systemd/system" / unit).read_bytes() == (ROOT / "systemd" / unit).read_bytes()
    return tree


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", f"--root={root}", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_clean(root: Path, unit: str) -> None:
    result = analyze(root, "verify", unit)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_typo(root: Path) -> None:
    """The check above is not vacuous: a misspelt directive and a missing binary are reported."""
    bad = root / "lib/systemd/system/logseal-typo.service"
    text = (ROOT / "systemd/logseal-agent.service").read_text()
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict")
                   .replace("/opt/logseal/bin/logseal", "/opt/logseal/bin/missing"))
    try:
        result = analyze(root, "verify", bad.name)
    finally:
        bad.unlink()
    assert "Unknown key 'ProtectSystm'" in result.stderr
    assert "/opt/logseal/bin/missing is not executable" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_at_most_2(root: Path, unit: str) -> None:
    result = analyze(root, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_directives_the_issue_asks_for(unit: str) -> None:
    d = directives(unit)
    expected = {
        "ProtectSystem": ["strict"], "NoNewPrivileges": ["yes"], "PrivateTmp": ["yes"], "ProtectHome": ["yes"],
        "MemoryDenyWriteExecute": ["yes"], "UMask": ["077"], "Restart": ["on-failure"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"], "KillSignal": ["SIGTERM"], "ConfigurationDirectory": ["logseal"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"], "RestartPreventExitStatus": ["2"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert d["SystemCallFilter"][0] == "@system-service"
    assert d["ExecStart"][0].startswith("/opt/logseal/bin/logseal ")
    assert int(d["TimeoutStopSec"][0]) >= 15  # covers the agent's 5 s ack wait plus sealing, with margin
    assert d["StateDirectory"] and d["StateDirectoryMode"] == ["0700"]
    assert d["User"][0].startswith("logseal") and "DynamicUser" not in d


def test_agent_has_only_cap_dac_read_search() -> None:
    d = directives("logseal-agent.service")
    assert d["AmbientCapabilities"] == ["CAP_DAC_READ_SEARCH"]
    assert d["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH"]
    assert d["User"] == ["logseal"] and d["StateDirectory"] == ["logseal"]


def test_aggregator_has_no_capability() -> None:
    d = directives("logseal-aggregator.service")
    assert d["CapabilityBoundingSet"] == [""] and d["AmbientCapabilities"] == [""]
    assert d["User"] == ["logseal-aggregator"] and d["StateDirectory"] == ["logseal-aggregator"]
    assert d["PrivateUsers"] == ["yes"]
