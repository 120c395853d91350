"""Following the systemd journal: a `journalctl --output=export --follow` child read as lines.

It offers the tailer's interface (`scan`, `read`, `positions`, `close`), so a journald stream runs
through the same pipeline as files. The resume position is the journal cursor of the last entry
handed to a batch; at start (and if the child exits) journalctl is run again with
`--after-cursor=<cursor>`, so entries are neither skipped nor read twice. An entry cut off by the
child's exit is not kept: it is read again after the cursor.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator

from agent.tail import Chunk, Position

log = logging.getLogger(__name__)

JOURNAL_KEY = "0:0"
JOURNAL_PATH = "journald"


class JournalReader:
    def __init__(self, command: list[str], positions: dict[str, Position], read_chunk_bytes: int) -> None:
        self._command = command
        saved = positions.get(JOURNAL_KEY)
        self.cursor = saved.cursor if saved is not None else ""
        self._chunk = read_chunk_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._partial = b""
        self._offset = 0
        self.generation = 0
        self._warned = False

    def scan(self) -> None:
        """Start journalctl if it is not running (first start, or it exited)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:
            log.warning("journal reader exited; restarting after the last cursor",
                        extra={"code": self._proc.returncode})
            self._close_proc()
        args = [*self._command, *([f"--after-cursor={self.cursor}"] if self.cursor else [])]
        try:
            self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as exc:
            if not self._warned:
                log.error("cannot start the journal reader; will retry",
                          extra={"command": args[0], "reason": exc.strerror})
                self._warned = True
            self._proc = None
            return
        self._warned = False
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._partial = b""
        self._offset = 0
        self.generation += 1

    @property
    def key(self) -> str:
        return f"journal:{self.generation}"

    def read(self) -> Iterator[Chunk]:
        if self._proc is None or self._proc.stdout is None:
            return
        try:
            data = os.read(self._proc.stdout.fileno(), self._chunk)
        except BlockingIOError:
            return
        if not data:
            return  # the child ended; the next scan restarts it
        buffer = self._partial + data
        last_newline = buffer.rfind(b"\n")
        if last_newline < 0:
            self._partial = buffer
            return
        self._partial = buffer[last_newline + 1:]
        start = self._offset
        self._offset += last_newline + 1
        yield Chunk(JOURNAL_PATH, 0, self.generation, start, buffer[:last_newline].split(b"\n"))

    def positions(self) -> dict[str, Position]:
        return {JOURNAL_KEY: Position(JOURNAL_PATH, 0, 0, 0, self.cursor)}

    def _close_proc(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def close(self) -> None:
        self._close_proc()
