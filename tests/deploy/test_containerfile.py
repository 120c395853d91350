"""packaging/Containerfile, read statically (tests/deploy/test_image_build.py builds and runs it where podman can).

Checks: multi-stage; the final stage starts from the same Python as the build stage, copies only
the venv from the build stage, installs nothing, removes pip/setuptools/wheel, and runs as a
numeric non-root user; its HEALTHCHECK and the manifests' probes ask the health endpoints the
daemons serve, on the port the packaged configs listen on; the manifests run the image this file
describes with the entrypoint it sets.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
TEXT = (ROOT / "packaging/Containerfile").read_text()


def stages() -> list[str]:
    body = re.sub(r"\\\n", " ", TEXT)
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    parts: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            parts.append([])
        if parts:
            parts[-1].append(line)
    return ["\n".join(p) for p in parts]


def default_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", TEXT, re.M)
    assert match, f"ARG {name} has no default"
    return match.group(1)


def test_multi_stage_and_final_stage_is_minimal() -> None:
    build, final = stages()
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert final.splitlines()[0] == "FROM ${RUNTIME_IMAGE}"
    # The venv's interpreter is a link into the base: both stages default to the same image.
    assert default_arg("RUNTIME_IMAGE") == default_arg("PYTHON_IMAGE") == "docker.io/library/python:3.11-slim-bookworm"
    assert "COPY --from=build /opt/logseal /opt/logseal" in final
    copies = [ln for ln in final.splitlines() if ln.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/logseal /opt/logseal"]
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "make "):
        assert tool not in final, tool
    assert re.search(r"pip uninstall --yes( --no-cache-dir)? pip setuptools wheel", final)
    user = re.search(r"^USER (\d+):(\d+)$", final, re.M)
    assert user and int(user.group(1)) > 0 and int(user.group(2)) > 0
    assert 'ENTRYPOINT ["logseal"]' in final


def test_health_check_and_probes_ask_the_daemons_health_endpoints() -> None:
    final = stages()[1]
    check = re.search(r"^HEALTHCHECK (.*?)CMD (\[.*\])$", final, re.M)
    assert check, "the final stage has no HEALTHCHECK"
    options, command = check.group(1), json.loads(check.group(2))
    assert re.search(r"--timeout=(\d+)s", options) and "--start-period=" in options
    assert command[0] == "python"  # the venv's (first on PATH): the image has no curl or wget
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", command[-1])
    assert url and url.group(2) == "/healthz"
    port = int(url.group(1))
    assert str(port) in re.search(r"^EXPOSE (.*)$", final, re.M).group(1).split()  # type: ignore[union-attr]
    served = re.findall(r'"(/\w+z)"', (ROOT / "agent" / "metrics.py").read_text())
    assert "/healthz" in served and "/readyz" in served
    for config in ("agent.toml", "aggregator.toml"):
        metrics = tomllib.loads((ROOT / "packaging" / config).read_text())["metrics"]
        assert metrics["listen"] == f"0.0.0.0:{port}", config
    for path, kind in ((ROOT / "daemonset.yaml", "DaemonSet"), (ROOT / "packaging/aggregator.yaml", "StatefulSet")):
        obj = next(o for o in yaml.safe_load_all(path.read_text()) if o and o["kind"] == kind)
        (c,) = obj["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        http_probes = [c[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
                       if p in c and "httpGet" in c[p]]
        assert http_probes, f"{path.name}: no HTTP probe"
        for probe in http_probes:
            assert probe["path"] in served and ports[probe["port"]] == port, (path.name, probe)


def test_manifests_use_this_image_version_and_entrypoint() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for path, kind in ((ROOT / "daemonset.yaml", "DaemonSet"), (ROOT / "packaging/aggregator.yaml", "StatefulSet")):
        obj = next(o for o in yaml.safe_load_all(path.read_text()) if o and o["kind"] == kind)
        (c,) = obj["spec"]["template"]["spec"]["containers"]
        assert c["image"] == f"ghcr.io/logseal/logseal:{version}"
    ag = next(o for o in yaml.safe_load_all((ROOT / "packaging/aggregator.yaml").read_text())
              if o and o["kind"] == "StatefulSet")
    (c,) = ag["spec"]["template"]["spec"]["containers"]
    uid = ag["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert c["args"][0] == "aggregator" and "command" not in c  # runs through ENTRYPOINT ["logseal"]
    assert re.search(rf"^USER {uid}:", TEXT, re.M)


def test_hadolint_when_available() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        return  # optional linter; the checks above always run
    result = subprocess.run([hadolint, str(ROOT / "packaging/Containerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
