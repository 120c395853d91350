"""The generated protobuf/gRPC code is exactly what `scripts/gen_proto.sh` makes from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
GENERATED = ["ingest_pb2.py", "ingest_pb2.pyi", "ingest_pb2_grpc.py"]


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    result = subprocess.run(["sh", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / "agent" / "_gen" / "logseal" / "v1" / name).read_text()
        committed = (ROOT / "agent" / "_gen" / "logseal" / "v1" / name).read_text()
        assert fresh == committed, f"agent/_gen/logseal/v1/{name} is stale: run scripts/gen_proto.sh"
