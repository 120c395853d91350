#!/usr/bin/env bash
# Build the logseal .deb: logseal in its own virtual environment under /opt/logseal, the systemd
# units, example configuration under /etc/logseal (conffiles), and system users made by postinst.
#
#   packaging/build-deb.sh [--out DIR] [--python PY] [--wheelhouse DIR]
#
# How the virtual environment is filled (offline either way, no compiler, a few seconds):
#   --wheelhouse DIR  logseal's wheel and its dependencies are installed from DIR with
#                     `pip install --no-index --find-links DIR` (release builds: fill DIR once with
#                     `pip download -d DIR logseal-*.whl` or `pip wheel -w DIR .` where the network is).
#   default           the dependencies already installed in PY's environment are copied file by
#                     file from their RECORDs (packaging/deb/stage_deps.py): what `pip install -e .`
#                     put in the development venv, so the tests build the package offline.
# The venv targets the distribution's /usr/bin/python3: it must have the same major.minor as PY
# (3.11 on Debian 12), since the dependencies carry compiled extensions; the package's Depends
# pins that range.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/dist"
PY="${PYTHON:-python3}"
WHEELHOUSE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool not found (apt-get install dpkg)" >&2; exit 2; }
done

VERSION="$("$PY" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml")"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
ARCH="$(dpkg --print-architecture)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/stage"
VENV="$STAGE/opt/logseal"
SITE="$VENV/lib/python$PYVER/site-packages"

# 1. logseal's wheel, from a clean copy of the sources (the tree itself is left untouched).
mkdir -p "$WORK/src" "$WORK/wheels"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/src/"
[ -f "$ROOT/LICENSE" ] && cp "$ROOT/LICENSE" "$WORK/src/"
(cd "$ROOT" && tar --exclude=__pycache__ -cf - agent) | tar -xf - -C "$WORK/src"
if ! "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$WORK/wheels" "$WORK/src" \
        >"$WORK/wheel.log" 2>&1; then
    cat "$WORK/wheel.log" >&2
    exit 1
fi
WHEEL="$(ls "$WORK"/wheels/logseal-"$VERSION"-*.whl)"

# 2. The virtual environment, laid out for its final place: /opt/logseal on /usr/bin/python3.
mkdir -p "$VENV/bin" "$SITE"
ln -s /usr/bin/python3 "$VENV/bin/python3"
ln -s python3 "$VENV/bin/python"
printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' "$PYVER" > "$VENV/pyvenv.cfg"
if [ -n "$WHEELHOUSE" ]; then
    "$PY" -m pip install -q --no-compile --no-index --find-links "$WHEELHOUSE" --target "$SITE" "$WHEEL"
else
    "$PY" -m pip install -q --no-compile --no-deps --no-index --target "$SITE" "$WHEEL"
    "$PY" "$ROOT/packaging/deb/stage_deps.py" --site "$SITE" \
        --requires-from "$(ls -d "$SITE"/logseal-"$VERSION".dist-info)" >/dev/null
fi
rm -rf "$SITE/bin"   # pip's console scripts name the build interpreter; ours is below
install -m 0755 "$ROOT/packaging/deb/logseal-launcher" "$VENV/bin/logseal"
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +

# 3. Units, configuration, documentation.
install -d -m 0755 "$STAGE/lib/systemd/system" "$STAGE/usr/bin" "$STAGE/etc/logseal/nodes" \
    "$STAGE/etc/logseal/tls" "$STAGE/usr/share/doc/logseal/docs" "$STAGE/usr/share/doc/logseal/examples"
install -m 0644 "$ROOT"/systemd/*.service "$STAGE/lib/systemd/system/"
ln -s /opt/logseal/bin/logseal "$STAGE/usr/bin/logseal"
for f in agent.toml aggregator.toml audit-policy.yaml; do
    install -m 0644 "$ROOT/packaging/$f" "$STAGE/etc/logseal/$f"
done
install -m 0644 "$ROOT/README.md" "$STAGE/usr/share/doc/logseal/README.md"
[ -d "$ROOT/docs" ] && install -m 0644 "$ROOT"/docs/*.md "$STAGE/usr/share/doc/logseal/docs/"
install -m 0644 "$ROOT/packaging/prometheus-alerts.yaml" "$ROOT/daemonset.yaml" "$ROOT/packaging/aggregator.yaml" \
    "$STAGE/usr/share/doc/logseal/examples/"
cat > "$STAGE/usr/share/doc/logseal/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: logseal
Files: *
License: Apache-2.0
Comment: /opt/logseal/lib holds third-party Python distributions; each one's licence is in its
 *.dist-info folder there.
COPYRIGHT

# 4. Control files.
mkdir -p "$STAGE/DEBIAN"
SIZE="$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$SIZE/" \
    "$ROOT/packaging/deb/control.in" > "$STAGE/DEBIAN/control"
printf '/etc/logseal/agent.toml\n/etc/logseal/aggregator.toml\n/etc/logseal/audit-policy.yaml\n' \
    > "$STAGE/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$ROOT/packaging/deb/$script" "$STAGE/DEBIAN/$script"
done
chmod -R u+rwX,go+rX,go-w "$STAGE"

mkdir -p "$OUT"
DEB="$OUT/logseal_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz -z1 --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
