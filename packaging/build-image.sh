#!/usr/bin/env bash
# Build the OCI image from packaging/Containerfile with podman, then check what was built:
#   1. the image runs as uid 10001 (numeric, non-root) and keeps its HEALTHCHECK on /healthz;
#   2. `logseal --help` runs through the image's ENTRYPOINT;
#   3. the final image has no compiler, make, linker, C headers, nor pip/setuptools/wheel;
#   4. a real run: an aggregator and an agent from the image, with the packaged configs over mTLS
#      (certificates and key made by the image; the agent in the aggregator's network namespace, no
#      host port used), ship a log file; every event is stored, `logseal verify` of the store is
#      intact, the agent's health check passes, both stop with 0 on SIGTERM, and both daemons'
#      logs are JSON lines.
#
# Usage: packaging/build-image.sh [--tag TAG] [--base official|debian|auto] [--ca-bundle FILE] [--no-run]
#   --base official  FROM the official python:3.11-slim-bookworm image (pulled from its registry)
#   --base debian    FROM two local images made here from Debian packages with debootstrap: the
#                    same Python at the same path, for machines that reach Debian and PyPI but no
#                    container registry (the build then needs deb.debian.org and PyPI)
#   --base auto      official when its registry answers, else debian (the default)
#   --ca-bundle FILE  CA bundle pip trusts inside the build (default: $PIP_CERT, else
#                    $REQUESTS_CA_BUNDLE, else the host's /etc/ssl/certs/ca-certificates.crt), so
#                    that a build behind a TLS-inspecting proxy trusts what the host trusts
# Exit: 0 built and every check passed; 1 a check or the build failed; 2 usage;
#       3 no container engine can build or run here (the reason is the last line on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)

TAG="localhost/logseal:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
BASE=auto
RUN_CHECKS=1
CA_BUNDLE=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}
[ -n "$CA_BUNDLE" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
OFFICIAL=docker.io/library/python:3.11-slim-bookworm
DEBIAN_RUNTIME=localhost/logseal-debian-python:3.11
DEBIAN_BUILD=localhost/logseal-debian-python-build:3.11
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --no-run) RUN_CHECKS=0; shift ;;
        --ca-bundle) CA_BUNDLE="$2"; shift 2 ;;
        *) echo "build-image.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
case "$BASE" in official|debian|auto) ;; *) echo "build-image.sh: --base $BASE: official, debian or auto" >&2; exit 2 ;; esac

say() { echo "build-image: $*"; }
cannot() { echo "build-image: cannot build here: $*" >&2; exit 3; }
fail() { echo "build-image: FAILED: $*" >&2; exit 1; }

command -v podman >/dev/null 2>&1 || cannot "podman is not installed (apt-get install podman)"
podman info >/dev/null 2>"${TMPDIR:-/tmp}/logseal-podman-info.err" \
    || cannot "podman info: $(tail -n1 "${TMPDIR:-/tmp}/logseal-podman-info.err")"

# `podman run` in a container sandbox: crun refuses hybrid cgroups and the default rlimits may
# exceed what the sandbox grants. Probe plain first, then runc with rlimits within the caller's.
RUNTIME=()
RUN_LIMITS=()
probe() { podman "${RUNTIME[@]}" run --rm --network none --no-healthcheck "${RUN_LIMITS[@]}" --entrypoint true "$1" 2>&1; }

# -- base images -------------------------------------------------------------------------------
use_debian() {
    command -v debootstrap >/dev/null 2>&1 || cannot "no container registry reachable and debootstrap is not installed"
    if ! podman image exists "$DEBIAN_RUNTIME"; then
        root=$(mktemp -d)
        say "debootstrap: Debian bookworm with python3 (the runtime base) ..."
        if ! debootstrap --variant=minbase --include=python3,python-is-python3,ca-certificates bookworm "$root" \
            http://deb.debian.org/debian >"$root.log" 2>&1; then
            tail -n5 "$root.log" >&2
            unreachable=$(grep -m1 -E "Failed getting release file|Temporary failure resolving|Could not resolve" "$root.log" || true)
            rm -rf "$root" "$root.log"
            [ -z "$unreachable" ] || cannot "Debian's mirror is not reachable for debootstrap: $unreachable"
            fail "debootstrap"
        fi
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$DEBIAN_RUNTIME" >/dev/null
        rm -rf "$root" "$root.log"
    fi
    if ! podman image exists "$DEBIAN_BUILD"; then
        say "the build base: the runtime base plus python3-venv ..."
        context=$(mktemp -d)
        printf 'FROM %s\nRUN apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv \\\n && rm -rf /var/lib/apt/lists/*\n' \
            "$DEBIAN_RUNTIME" >"$context/Containerfile"
        podman build --isolation chroot --network host -q -t "$DEBIAN_BUILD" "$context" >"$context.log" 2>&1 \
            || { tail -n 20 "$context.log" >&2; fail "building $DEBIAN_BUILD"; }
        rm -f "$context.log"
        rm -rf "$context"
    fi
    BUILD_BASE=$DEBIAN_BUILD RUNTIME_BASE=$DEBIAN_RUNTIME
}

if [ "$BASE" = official ] || [ "$BASE" = auto ]; then
    if err=$(podman pull -q "$OFFICIAL" 2>&1 >/dev/null); then
        BUILD_BASE=$OFFICIAL RUNTIME_BASE=$OFFICIAL
    elif [ "$BASE" = official ]; then
        cannot "podman pull $OFFICIAL: $(echo "$err" | tail -n1)"
    else
        say "the official base cannot be pulled ($(echo "$err" | tail -n1)); using --base debian"
        use_debian
    fi
else
    use_debian
fi

# -- build -------------------------------------------------------------------------------------
say "building $TAG from packaging/Containerfile (FROM $BUILD_BASE, final FROM $RUNTIME_BASE) ..."
previous=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
ca=()
if [ -n "$CA_BUNDLE" ]; then
    [ -f "$CA_BUNDLE" ] || { echo "build-image.sh: --ca-bundle $CA_BUNDLE: no such file" >&2; exit 2; }
    ca=(-v "$CA_BUNDLE:/run/logseal-build-ca.pem:ro" --build-arg REQUESTS_CA_BUNDLE=/run/logseal-build-ca.pem)
    say "pip in the build trusts $CA_BUNDLE"
fi
podman build --isolation chroot --network host --format docker -f packaging/Containerfile -t "$TAG" "${ca[@]}" \
    --build-arg PYTHON_IMAGE="$BUILD_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" . >"${TMPDIR:-/tmp}/logseal-image-build.log" 2>&1 \
    || {
        log="${TMPDIR:-/tmp}/logseal-image-build.log"
        tail -n 20 "$log" >&2
        # PyPI out of reach is this machine's limit, not the Containerfile's fault.
        unreachable=$(grep -m1 -E "Could not fetch URL|Failed to establish a new connection|Temporary failure in name resolution" "$log" || true)
        [ -z "$unreachable" ] || cannot "PyPI is not reachable from the build: $(echo "$unreachable" | sed 's/^ *//' | cut -c1-200)"
        fail "podman build (log: $log)"
    }
size=$(podman image inspect --format '{{.Size}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$TAG")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true  # the image this tag named before, if nothing else uses it
fi
say "built $TAG: $((size / 1000000)) MB"

# -- static checks of the built image ----------------------------------------------------------
user=$(podman image inspect --format '{{.Config.User}}' "$TAG")
[ "$user" = "10001:10001" ] || fail "image user is '$user', want 10001:10001"
health=$(podman image inspect --format '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' "$TAG")
case "$health" in *127.0.0.1:9600/healthz*) ;; *) fail "image health check is '$health', want /healthz on 9600" ;; esac
entry=$(podman image inspect --format '{{join .Config.Entrypoint " "}}' "$TAG")
[ "$entry" = logseal ] || fail "entrypoint is '$entry', want logseal"
say "config: user $user, entrypoint $entry, health check on 127.0.0.1:9600/healthz"
[ "$RUN_CHECKS" = 1 ] || { say "--no-run: image built, run checks skipped"; exit 0; }

if ! out=$(probe "$TAG"); then
    first=$out
    RUNTIME=(--runtime runc)
    RUN_LIMITS=(--ulimit "nofile=$(ulimit -n):$(ulimit -n)" --ulimit "nproc=1024:1024")
    command -v runc >/dev/null 2>&1 || cannot "podman run: $(echo "$first" | tail -n1) (and runc, the fallback, is not installed)"
    out=$(probe "$TAG") || cannot "podman run: $(echo "$first" | tail -n1); with runc: $(echo "$out" | tail -n1)"
    say "podman run needs ${RUNTIME[*]} ${RUN_LIMITS[*]} here ($(echo "$first" | tail -n1 | cut -c1-120))"
fi
run() { podman "${RUNTIME[@]}" run --rm --network none --no-healthcheck "${RUN_LIMITS[@]}" "$@"; }
# Daemons keep the image's health check, run on demand below. Without systemd podman cannot set
# a timer for it and says so on every start and stop: that line alone is dropped.
quiet() { grep -v "unable to get systemd connection" >&2 || true; }
daemon() { podman "${RUNTIME[@]}" run -d --health-interval disable "${RUN_LIMITS[@]}" "$@" 2> >(quiet); }

help=$(run "$TAG" --help) || fail "logseal --help through the entrypoint"
case "$help" in *"usage: logseal"*) ;; *) fail "logseal --help printed no usage" ;; esac
uid=$(run --entrypoint id "$TAG" -u)
[ "$uid" = 10001 ] || fail "runs as uid $uid"
say "runs: \`logseal --help\` through the entrypoint, as uid $uid"

# shellcheck disable=SC2016 # expanded inside the container
tools=$(run --entrypoint sh "$TAG" -c '
    for t in gcc cc c++ g++ clang cpp make ld as pip pip3 /opt/logseal/bin/pip; do command -v "$t"; done
    base=$(readlink -f /opt/logseal/bin/python)
    for m in pip setuptools wheel; do
        /opt/logseal/bin/python -c "import $m" 2>/dev/null && echo "venv python module $m"
        "$base" -c "import $m" 2>/dev/null && echo "base python module $m"
    done
    dpkg-query -W -f "\${Package}\n" 2>/dev/null | grep -E "^(gcc(-[0-9]+)?|g\+\+.*|cpp.*|clang.*|make|build-essential|binutils.*|.*-dev|python3.*-(pip|setuptools|wheel|venv)(-whl)?)$"
    true')
[ -z "$tools" ] || fail "build tools in the final image: $(echo "$tools" | tr '\n' ' ')"
say "no build tools: no compiler, make, linker, C headers, pip, setuptools or wheel"

# -- a real run, with the packaged configs and mTLS ----------------------------------------------
# packaging/agent.toml as shipped, and packaging/aggregator.toml with only its metrics port moved
# (the agent runs in the aggregator's network namespace, so no host port is used, and both cannot
# have 9600). Certificates and the node key are made by the image itself; every folder the
# configs name is a mount of a temporary folder at that path.
work=$(mktemp -d)
agg="logseal-image-check-agg-$$" agent="logseal-image-check-agent-$$"
cleanup() {  # the agent first: it lives in the aggregator's network namespace
    podman rm -f -t 0 "$agent" >/dev/null 2>&1 || true
    podman rm -f -t 0 "$agg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ca" "$work/tls-agg" "$work/tls-node" "$work/nodes" "$work/agg-state" "$work/node-state/keys" \
         "$work/log/kubernetes/audit" "$work/log/audit"
lines=200
for i in $(seq 1 "$lines"); do
    echo "Nov 26 10:00:00 worker-1 sshd[$i]: Accepted publickey for ops from 192.0.2.$((i % 250 + 1)) port $((40000 + i)) ssh2"
done >"$work/log/auth.log"
sed 's/^listen = "0.0.0.0:9600"/listen = "0.0.0.0:9601"/' packaging/aggregator.toml >"$work/aggregator.toml"
grep -q '^listen = "0.0.0.0:9601"' "$work/aggregator.toml" || fail "packaging/aggregator.toml has no [metrics] listen on 9600"
aggregator_name=$(sed -n 's/^aggregator = "\(.*\):[0-9]*".*/\1/p' packaging/agent.toml)
printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$aggregator_name" >"$work/hosts"
chown -R 10001:10001 "$work"

run -v "$work/ca:/ca" "$TAG" certs init --out /ca >/dev/null
run -v "$work/ca:/ca" -v "$work/tls-agg:/out" "$TAG" certs issue --ca /ca --aggregator --san "$aggregator_name" \
    --out /out >/dev/null
run -v "$work/ca:/ca" -v "$work/tls-node:/out" "$TAG" certs issue --ca /ca --node-id worker-1 --out /out >/dev/null
run -v "$work/node-state:/var/lib/logseal" "$TAG" keygen --node-id worker-1 --out /var/lib/logseal/keys >/dev/null
cp "$work/node-state/keys/worker-1.pub" "$work/nodes/"
chown 10001:10001 "$work/nodes/worker-1.pub"
[ "$(stat -c %a "$work/node-state/keys/worker-1.key")" = 600 ] || fail "the node key is not 0600"

daemon --name "$agg" --network none -v "$work/aggregator.toml:/etc/logseal/aggregator.toml:ro" \
    -v "$work/tls-agg:/etc/logseal/tls:ro" -v "$work/nodes:/etc/logseal/nodes:ro" \
    -v "$work/agg-state:/var/lib/logseal-aggregator" "$TAG" aggregator --config /etc/logseal/aggregator.toml >/dev/null
wait_for() {  # what, seconds, test command...
    local what=$1 deadline=$((SECONDS + $2)); shift 2
    until "$@"; do [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"; sleep 0.5; done
}
# The log is read whole before grep: `grep -q` stops at the first match, and under pipefail the
# SIGPIPE that gives `podman logs` would fail the check.
serving() { local out; out=$(podman logs "$agg" 2>&1); grep -q '"msg":"aggregator serving"' <<<"$out"; }
wait_for "the aggregator to serve" 60 serving
daemon --name "$agent" --network "container:$agg" -v "$ROOT_DIR/packaging/agent.toml:/etc/logseal/agent.toml:ro" \
    -v "$work/hosts:/etc/hosts:ro" -v "$work/tls-node:/etc/logseal/tls:ro" -v "$work/node-state:/var/lib/logseal" \
    -v "$work/log:/var/log:ro" "$TAG" agent --config /etc/logseal/agent.toml >/dev/null
store=/var/lib/logseal-aggregator/store
stored() { [ "$(podman exec "$agg" logseal query "$store" --json 2>/dev/null | wc -l)" -ge "$lines" ]; }
wait_for "$lines events to be stored" 120 stored
healthy() { podman healthcheck run "$agent" >/dev/null 2>&1; }
wait_for "the agent's health check" 30 healthy
podman stop -t 30 "$agent" >/dev/null 2> >(quiet)
podman stop -t 30 "$agg" >/dev/null 2> >(quiet)
codes="$(podman inspect --format '{{.State.ExitCode}}' "$agent") $(podman inspect --format '{{.State.ExitCode}}' "$agg")"
[ "$codes" = "0 0" ] || fail "exit codes of agent and aggregator after SIGTERM: $codes"
for c in "$agent" "$agg"; do
    podman logs "$c" 2>&1 | python3 -c '
import json, sys
n = 0
for n, line in enumerate(sys.stdin, 1):
    r = json.loads(line)
    assert {"time", "level", "logger", "msg"} <= set(r), line
    assert "PRIVATE KEY" not in line, line
assert n, "no log lines"
' || fail "$c: its log is not JSON lines"
done
agg_log=$(podman logs "$agg" 2>&1)
grep -q '"msg":"aggregator serving".*"tls":true' <<<"$agg_log" || fail "the aggregator did not serve with TLS"
state=(-v "$work/agg-state:/var/lib/logseal-aggregator")
verdict=$(run "${state[@]}" "$TAG" verify "$store") || fail "logseal verify: $verdict"
count=$(run "${state[@]}" "$TAG" query "$store" --json | wc -l)
[ "$count" -eq "$lines" ] || fail "stored $count events, want $lines"
say "real run: the packaged agent.toml and aggregator.toml, over mTLS, from the image: stored $count/$lines events; health check passed; both exited 0 on SIGTERM; logs are JSON lines"
say "verify: $verdict"
say "OK $TAG"
