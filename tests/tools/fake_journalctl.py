"""A stand-in for `journalctl --output=export --follow` over a file of export entries (test data).

Understands `--after-cursor=C` and `--follow`; other journalctl flags are accepted and ignored.
Entries in the file are separated by an empty line and carry `__CURSOR=`; binary fields are not
supported here (the normalizer's own tests cover them).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path


def entries(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n\n") + 2] if b"\n\n" in data else b""
    return [e + b"\n\n" for e in complete.split(b"\n\n") if e]


def cursor_of(entry: bytes) -> bytes:
    for line in entry.split(b"\n"):
        if line.startswith(b"__CURSOR="):
            return line[len(b"__CURSOR="):]
    return b""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--after-cursor", default="")
    parser.add_argument("--follow", action="store_true")
    args, _ = parser.parse_known_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    path = Path(args.source)
    sent = 0
    if args.after_cursor:
        cursors = [cursor_of(e) for e in entries(path)]
        wanted = args.after_cursor.encode()
        sent = cursors.index(wanted) + 1 if wanted in cursors else 0
    out = sys.stdout.buffer
    while True:
        current = entries(path)
        for entry in current[sent:]:
            out.write(entry)
        out.flush()
        sent = len(current)
        if not args.follow:
            return 0
        time.sleep(0.05)  # polling a test file, not synchronising the test


if __name__ == "__main__":
    raise SystemExit(main())
