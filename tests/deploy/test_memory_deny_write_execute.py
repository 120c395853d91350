"""The units set MemoryDenyWriteExecute=yes: prove the runtime works without writable+executable memory.

The kernel's own W^X switch (prctl PR_SET_MDWE, Linux 6.3+, inherited across fork and exec, the
same rule systemd's seccomp filter enforces: no mapping that is both writable and executable, no
executable permission gained later) is set in a child process, which then runs `logseal demo`: a
real aggregator and agent, gRPC, Ed25519 signing, zstd, SQLite, and verification.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

SCRIPT = textwrap.dedent("""
    import ctypes, mmap, runpy, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        sys.exit("W^X is not enforced")
    sys.argv = ["logseal", *sys.argv[1:]]
    runpy.run_module("agent", run_name="__main__")
""")


def _kernel_has_mdwe() -> bool:
    release = platform.release().split(".")
    try:
        return (int(release[0]), int(release[1])) >= (6, 3)
    except (ValueError, IndexError):
        return False


@pytest.mark.skipif(sys.platform != "linux" or not _kernel_has_mdwe(), reason="PR_SET_MDWE needs Linux 6.3+")
def test_demo_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, "demo", "--workdir", str(tmp_path / "demo"), "--cleanup"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if result.returncode == 77:
        pytest.skip("prctl(PR_SET_MDWE) refused by this kernel")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo passed" in result.stdout
    assert "intact" in result.stdout
