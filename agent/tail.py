"""File tailing: which files a stream's globs match, and which complete lines are new in them.

A file is identified by (device, inode), not by name, so a rename (log rotation) keeps its cursor
and a rotated copy that still matches the glob is not read twice. A cursor's `offset` is the byte
after the last complete line handed out; a partial last line waits for its newline
(reads are positional, `pread` at the cursor, so an abandoned read loses nothing).

Positions are plain values (`Position`) so the spool can persist them atomically together with the
batch that covers them; `Tailer` is built from them on restart.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Position:
    path: str
    dev: int
    ino: int
    offset: int
    # For a journald stream: the cursor of the last entry covered (files leave it empty).
    cursor: str = ""

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive complete lines of one file, without their newlines, starting at `offset`."""

    path: str
    dev: int
    ino: int
    offset: int
    lines: list[bytes]
    # True when the (single) line was longer than one read and goes on in the next Chunk.
    continues: bool = False

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


class _Cursor:
    __slots__ = ("path", "dev", "ino", "offset", "handle", "seen")

    def __init__(self, path: str, dev: int, ino: int, offset: int, handle: BinaryIO) -> None:
        self.path = path
        self.dev = dev
        self.ino = ino
        self.offset = offset
        self.handle = handle
        self.seen = True

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


class Tailer:
    """Tails every file matching a stream's globs, resuming from persisted positions."""

    def __init__(self, patterns: list[str], positions: dict[str, Position], read_chunk_bytes: int) -> None:
        self._patterns = patterns
        self._resume = dict(positions)
        self._chunk = read_chunk_bytes
        self._cursors: dict[str, _Cursor] = {}
        self._warned: set[str] = set()

    def positions(self) -> dict[str, Position]:
        """Where every tracked file has been consumed to (complete lines only)."""
        out = dict(self._resume)
        for c in self._cursors.values():
            out[c.key] = Position(c.path, c.dev, c.ino, c.offset)
        return out

    def scan(self) -> None:
        """Pick up new files under the globs and notice renamed or vanished ones."""
        for cursor in self._cursors.values():
            cursor.seen = False
        for pattern in self._patterns:
            for path in sorted(glob.glob(pattern)):
                self._track(path)
        for key, cursor in list(self._cursors.items()):
            if not cursor.seen and self._at_eof(cursor):
                cursor.handle.close()
                del self._cursors[key]

    def _track(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        key = f"{st.st_dev}:{st.st_ino}"
        cursor = self._cursors.get(key)
        if cursor is not None:
            cursor.seen = True
            cursor.path = path
            return
        resume = self._resume.pop(key, None)
        offset = resume.offset if resume is not None else 0
        if offset > st.st_size:
            log.warning("file shrank below its saved position; reading from the start path=%s saved=%d size=%d",
                        path, offset, st.st_size)
            offset = 0
        try:
            handle = open(path, "rb")  # noqa: SIM115 - lives as long as the cursor
        except OSError as exc:
            if path not in self._warned:
                self._warned.add(path)
                log.error("cannot open file, will retry path=%s reason=%s", path, exc.strerror)
            return
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            handle.close()  # replaced between stat and open; the next scan picks up the new file
            return
        self._warned.discard(path)
        self._cursors[key] = _Cursor(path, st.st_dev, st.st_ino, offset, handle)

    def _at_eof(self, cursor: _Cursor) -> bool:
        try:
            return os.fstat(cursor.handle.fileno()).st_size <= cursor.offset
        except OSError:
            return True

    def read(self) -> Iterator[Chunk]:
        """New complete lines, at most one read per file. The cursor moves past a chunk as it is
        handed out, so a consumer that stops in the middle of one must record its own position."""
        for cursor in list(self._cursors.values()):
            chunk = self._read_cursor(cursor)
            if chunk is not None:
                yield chunk

    def _read_cursor(self, cursor: _Cursor) -> Chunk | None:
        fd = cursor.handle.fileno()
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return None
        if size < cursor.offset:
            log.warning("file truncated; reading from the start path=%s position=%d size=%d",
                        cursor.path, cursor.offset, size)
            cursor.offset = 0
        if size == cursor.offset:
            return None
        start = cursor.offset
        data = os.pread(fd, self._chunk, start)
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            if len(data) >= self._chunk or (not cursor.seen and data):
                # A line longer than a whole read, or the unterminated tail of a file that left the glob:
                # hand it out as it is rather than stall behind it.
                cursor.offset += len(data)
                return Chunk(cursor.path, cursor.dev, cursor.ino, start, [data], continues=len(data) >= self._chunk)
            return None
        cursor.offset = start + last_newline + 1
        return Chunk(cursor.path, cursor.dev, cursor.ino, start, data[:last_newline].split(b"\n"))

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.handle.close()
        self._cursors.clear()
