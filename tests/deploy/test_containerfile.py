"""packaging/Containerfile, read statically (no container engine runs here, so the image is not built in CI).

Checks: multi-stage; the final stage starts from the same base, copies only the venv from the
build stage, installs nothing, removes pip/setuptools/wheel, and runs as a numeric non-root user;
the manifests run the image this file describes with the entrypoint it sets.
"""

from __future__ import annotations

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


def test_multi_stage_and_final_stage_is_minimal() -> None:
    build, final = stages()
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert final.splitlines()[0] == "FROM ${PYTHON_IMAGE}"
    assert "COPY --from=build /opt/logseal /opt/logseal" in final
    copies = [ln for ln in final.splitlines() if ln.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/logseal /opt/logseal"]
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "make "):
        assert tool not in final, tool
    assert re.search(r"pip uninstall --yes( --no-cache-dir)? pip setuptools wheel", final)
    user = re.search(r"^USER (\d+):(\d+)$", final, re.M)
    assert user and int(user.group(1)) > 0 and int(user.group(2)) > 0
    assert 'ENTRYPOINT ["logseal"]' in final


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
