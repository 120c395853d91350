#!/usr/bin/env sh
# The test command of the README: installs what the tests need on a fresh Debian machine (a few
# Debian tools, a virtualenv with the test extras), then runs the whole suite.
set -eu
cd "$(dirname "$0")/.."

# Debian tools the deployment tests run for real (tests/deploy/): systemd-analyze (package
# systemd), kill (procps, copied into the units' check tree), dpkg-deb (dpkg). Installed only when
# missing; quiet and idempotent.
missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || missing="$missing procps"  # the binary, not the builtin
command -v dpkg-deb >/dev/null 2>&1 || missing="$missing dpkg"
# The OCI image build (tests/deploy/test_image_build.py): podman, runc where crun cannot run in a
# sandbox, and debootstrap for base images when no container registry is reachable.
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    # shellcheck disable=SC2086 # $missing is a list of package names
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
