#!/usr/bin/env sh
# Regenerate agent/_gen from proto/. Requires the test extras (grpcio-tools, pinned in pyproject.toml).
# Usage: scripts/gen_proto.sh [OUTDIR]   (default: the repository root)
# Python: $PYTHON if set, else the repository's .venv, else python3.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
out=${1:-$root}
mkdir -p "$out/agent/_gen/logseal/v1"
cd "$root"
"$python" -m grpc_tools.protoc -Iagent/_gen=proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/logseal/v1/ingest.proto
