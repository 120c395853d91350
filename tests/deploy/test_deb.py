"""packaging/build-deb.sh: the .deb is built offline, and holds what an operator needs, laid out right.

Built for real with dpkg-deb; read back with `dpkg-deb --info` / `--contents`; unpacked, its
virtual environment runs on the distribution's own /usr/bin/python3 (isolated from the system's
site-packages) and the packaged default configs pass logseal's own config validation.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.config import load_agent_config, load_aggregator_config

ROOT = Path(__file__).parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (mode string, owner/group, link target or '')."""
    entries = {}
    for line in dpkg_deb("--contents", str(deb)).splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix(".").rstrip("/") or "/"] = (mode, owner, target)
    return entries


def test_info_names_the_package_and_pins_the_python_abi(deb: Path) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    assert deb.name == f"logseal_{VERSION}_{arch}.deb"
    fields = dict(re.findall(r"^ (\S+): (.*)$", dpkg_deb("--info", str(deb)), re.M))
    assert fields["Package"] == "logseal"
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == arch
    # the venv carries CPython 3.11 extension modules (grpcio, orjson, ...): pin the interpreter range
    assert "python3 (>= 3.11~)" in fields["Depends"] and "python3 (<< 3.12)" in fields["Depends"]
    assert "adduser" in fields["Depends"]
    assert int(fields["Installed-Size"]) > 1000
    assert dpkg_deb("--field", str(deb), "Package").strip() == "logseal"


def test_control_scripts_and_conffiles(deb: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True, timeout=60)
    assert (control / "conffiles").read_text().split() == [
        "/etc/logseal/agent.toml", "/etc/logseal/aggregator.toml", "/etc/logseal/audit-policy.yaml"]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert path.stat().st_mode & 0o111, f"{script} must be executable"
        subprocess.run(["sh", "-n", str(path)], check=True)  # parses as POSIX sh
    postinst = (control / "postinst").read_text()
    assert "adduser --quiet --system --group" in postinst
    assert "add_user logseal /var/lib/logseal " in postinst
    assert "add_user logseal-aggregator /var/lib/logseal-aggregator " in postinst
    assert "systemctl enable" not in postinst  # nothing starts before /etc/logseal is configured


def test_contents_layout(deb: Path) -> None:
    entries = contents(deb)
    for path in ("/opt/logseal/bin/logseal", "/opt/logseal/pyvenv.cfg",
                 "/lib/systemd/system/logseal-agent.service", "/lib/systemd/system/logseal-aggregator.service",
                 "/etc/logseal/agent.toml", "/etc/logseal/aggregator.toml", "/etc/logseal/audit-policy.yaml",
                 "/etc/logseal/nodes", "/etc/logseal/tls", "/usr/share/doc/logseal/copyright",
                 "/usr/share/doc/logseal/README.md", "/usr/share/doc/logseal/examples/prometheus-alerts.yaml"):
        assert path in entries, path
    assert entries["/usr/bin/logseal"][2] == "/opt/logseal/bin/logseal"
    assert entries["/opt/logseal/bin/python3"][2] == "/usr/bin/python3"
    assert entries["/opt/logseal/bin/logseal"][0] == "-rwxr-xr-x"
    assert all(owner == "root/root" for _, owner, _ in entries.values())
    assert not [p for p, (mode, _, _) in entries.items() if mode[8] == "w" and mode[0] != "l"], "nothing world-writable"
    site = "/opt/logseal/lib/python3.11/site-packages"
    for module in ("agent/cli.py", "agent/metrics.py", "grpc/__init__.py", "cryptography/__init__.py",
                   "zstandard/__init__.py", "orjson/__init__.py", "yaml/__init__.py", "google/protobuf/__init__.py"):
        assert f"{site}/{module}" in entries, module
    # no test tooling, no build tools, no byte-code from the build machine
    for unwanted in ("pytest", "mypy", "ruff", "grpc_tools", "hypothesis", "setuptools", "pip"):
        assert f"{site}/{unwanted}" not in entries, unwanted
    assert not [p for p in entries if "__pycache__" in p]


def test_the_venv_runs_on_the_system_python_isolated(deb_tree: Path, tmp_path: Path) -> None:
    if not Path("/usr/bin/python3").exists():
        pytest.fail("/usr/bin/python3 missing: the package depends on Debian's python3")
    python = deb_tree / "opt/logseal/bin/python3"
    probe = subprocess.run(
        [str(python), "-I", "-c", "import sys, agent.cli, grpc, cryptography, zstandard, orjson, yaml; "
                                  "print(sys.prefix); print(*sys.path, sep='\\n')"],
        capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    prefix, *path = probe.stdout.splitlines()
    assert prefix == str(deb_tree / "opt/logseal")
    assert not [p for p in path if "site-packages" in p and not p.startswith(prefix)], path
    keys = tmp_path / "keys"
    launcher = deb_tree / "opt/logseal/bin/logseal"
    assert launcher.read_text().startswith("#!/opt/logseal/bin/python3\n")
    run = subprocess.run([str(python), str(launcher), "keygen", "--node-id", "pkg-node", "--out", str(keys)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (keys / "pkg-node.key").stat().st_mode & 0o777 == 0o600


def test_packaged_configs_are_valid_for_logseal(deb_tree: Path, tmp_path: Path) -> None:
    """The shipped /etc/logseal/*.toml pass logseal's own validation once the files they name exist."""
    etc = tmp_path / "etc"
    shutil.copytree(deb_tree / "etc/logseal", etc)
    for name in ("agent.toml", "aggregator.toml"):
        text = (etc / name).read_text()
        # re-root every absolute path under the temp tree, and create the files they name
        text = re.sub(r'"(/(?:etc|var)/[^"]*)"', lambda m: f'"{tmp_path}{m.group(1)}"', text)
        (etc / name).write_text(text)
        for value in re.findall(r'^(?:key|ca|cert)\s*=\s*"([^"]+)"', text, re.M):
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).write_text("placeholder\n")
        for value in re.findall(r'^trusted_keys_dir\s*=\s*"([^"]+)"', text, re.M):
            Path(value).mkdir(parents=True, exist_ok=True)
    agent = load_agent_config(etc / "agent.toml")
    assert agent.spool_dir == tmp_path / "var/lib/logseal/spool"
    aggregator = load_aggregator_config(etc / "aggregator.toml")
    # the store lives in the aggregator unit's StateDirectory, the only place it may write
    assert aggregator.store_dir == tmp_path / "var/lib/logseal-aggregator/store"
