#!/usr/bin/env sh
# Regenerate agent/_gen from proto/. Requires the test extras (grpcio-tools, pinned in pyproject.toml).
# Usage: scripts/gen_proto.sh [OUTDIR]   (default: the repository root)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
mkdir -p "$out/agent/_gen/logseal/v1"
cd "$root"
python -m grpc_tools.protoc -Iagent/_gen=proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/logseal/v1/ingest.proto
