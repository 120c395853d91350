"""File tailing: which files a stream's globs match, and which complete lines are new in them.

Identity. A file is known by (device, inode), checked by fingerprints: a hash of its first bytes
(`head`, up to 256) and of the bytes just before the cursor (`tail`). So:
- rename rotation (logrotate `create`, the kube-apiserver's own backups) keeps the cursor, and the
  renamed file is drained to its end before it is left;
- a file deleted while open, or compressed away after rotation, is drained through its open
  descriptor; compressed files themselves are never read as logs;
- an inode reused by a new file is caught (its head differs) and read from the start;
- copytruncate: a truncated file's unread rest is read from its rotated copy (a file whose head
  and tail fingerprints match the cursor), and the truncated file is read again from its start;
  when no copy can be found, a `Gap` names the bytes that were lost. A plain copy of a file that
  is still being read is not read twice.

Reading. A cursor's `offset` is the byte after the last complete line handed out; a partial last
line waits for its newline. Reads are positional (`pread`), so an abandoned read loses nothing. A
line longer than `max_line_bytes` is handed out in pieces (`Chunk.continues`), never dropped.

Positions are plain values (`Position`) so the spool can persist them atomically together with the
batch that covers them; `Tailer` is built from them on restart. Every case is counted.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from agent.archive import match_archive

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 256
# How many scans (one a second) a new file that looks like a copy of a file still being read waits
# for that file's truncation (copytruncate) before it is taken as a file of its own.
COPY_WAIT_SCANS = 5
# Magic numbers of compressed files (gzip, zstd, xz, bzip2, zip): rotated logs, never read as text.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh", b"PK\x03\x04")


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Position:
    path: str
    dev: int
    ino: int
    offset: int
    # For a journald stream: the cursor of the last entry covered (files leave it empty).
    cursor: str = ""
    # Fingerprint of the file's first `head_len` bytes, and of the bytes just before `offset`.
    head: str = ""
    head_len: int = 0
    tail: str = ""
    # The path the file was first read under: rotated files of one log share it, and are read in turn.
    origin: str = ""
    # The file's size at the last look: a saved position with offset == size had nothing left to read.
    size: int = 0

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
    # True when the (single) line was longer than `max_line_bytes` and goes on in the next Chunk.
    continues: bool = False

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


@dataclass(frozen=True, slots=True)
class Gap:
    """Bytes of a file that were lost before they could be read, and why."""

    path: str
    start: int
    end: int
    reason: str


def _regular_files(folders: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """The regular files in these folders, by name; folders and files that vanish are passed over."""
    for folder in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


class _Cursor:
    __slots__ = ("path", "dev", "ino", "offset", "handle", "seen", "head", "head_len", "tail", "last_size",
                 "origin")

    def __init__(self, path: str, dev: int, ino: int, offset: int, handle: BinaryIO, head: str, head_len: int,
                 tail: str, origin: str = "") -> None:
        self.path = path
        self.origin = origin or path
        self.dev = dev
        self.ino = ino
        self.offset = offset
        self.handle = handle
        self.seen = True
        self.head = head
        self.head_len = head_len
        self.tail = tail
        self.last_size = offset

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"

    def position(self) -> Position:
        return Position(self.path, self.dev, self.ino, self.offset, "", self.head, self.head_len, self.tail,
                        self.origin, max(self.last_size, self.offset))


class Tailer:
    """Tails every file matching a stream's globs, resuming from persisted positions."""

    def __init__(self, patterns: list[str], positions: dict[str, Position], read_chunk_bytes: int,
                 max_line_bytes: int = 1 << 20) -> None:
        self._patterns = patterns
        self._resume = dict(positions)
        self._saved_keys = frozenset(positions)
        self._chunk = read_chunk_bytes
        self._max_line = max(max_line_bytes, 1)
        self._cursors: dict[str, _Cursor] = {}
        self._warned: set[str] = set()
        self._ignored: set[str] = set()
        # Files waiting to be judged copies: key -> (scan of the first look, scan of the latest look).
        self._deferred: dict[str, tuple[int, int]] = {}
        # Saved positions of files found truncated or replaced at start (copytruncate while the agent
        # was stopped): their unread rest is taken from the rotated copy when one turns up.
        self._orphans: dict[str, Position] = {}
        self._orphaned_at: dict[str, int] = {}
        self._truncated_orphans: set[str] = set()
        self._scans = 0
        self.gaps: list[Gap] = []
        self.counters: dict[str, int] = {}

    def _count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def _warn_once(self, path: str, message: str, **fields: object) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning(message, extra={"path": path, **fields})

    def positions(self) -> dict[str, Position]:
        """Where every tracked file has been consumed to (complete lines only)."""
        out = dict(self._resume)
        for c in self._cursors.values():
            out[c.key] = c.position()
        return out

    def position_at(self, key: str, offset: int) -> Position | None:
        """A tracked file's position moved back to `offset` (a batch that ends inside a chunk)."""
        cursor = self._cursors.get(key)
        if cursor is None:
            return None
        return replace(cursor.position(), offset=offset, tail="")

    def take_gaps(self) -> list[Gap]:
        gaps, self.gaps = self.gaps, []
        return gaps

    # -- discovery ------------------------------------------------------------------------------
    def scan(self) -> None:
        """Pick up new files under the globs and notice renamed or vanished ones."""
        self._scans += 1
        for cursor in self._cursors.values():
            cursor.seen = False
        for path in self._matches():
            self._track(path)
        for key in [k for k, (_, latest) in self._deferred.items() if latest < self._scans]:
            del self._deferred[key]  # no longer waited for (gone, or judged): forget it
        for key, cursor in list(self._cursors.items()):
            if not cursor.seen and self._at_eof(cursor):
                cursor.handle.close()
                del self._cursors[key]
                self._count("files_closed")
        if self._scans >= COPY_WAIT_SCANS:
            self._settle_unclaimed()

    def _settle_unclaimed(self) -> None:
        """Saved positions no glob led back to, and truncated files whose copy never turned up, once
        every rotated copy has had its chance: drain what is still on disk, and say what was lost."""
        for key, saved in list(self._resume.items()):
            try:
                st = os.stat(saved.path)
                if (st.st_dev, st.st_ino) == (saved.dev, saved.ino) and self._matched(saved.path):
                    continue  # still under a glob, just not opened yet (unreadable): it is retried
            except OSError:
                pass
            del self._resume[key]
            if not self._reopen_retired(saved):
                self._settle_lost(saved, "file gone while the agent was stopped")
        for key in [k for k, at in self._orphaned_at.items() if self._scans - at >= COPY_WAIT_SCANS]:
            del self._orphaned_at[key]
            if key not in self._orphans:
                continue  # adopted by its rotated copy
            saved = self._orphans.pop(key)
            if key in self._truncated_orphans:
                self._truncated_orphans.discard(key)
                if not self._settled_by_archive(saved, "file truncated while the agent was stopped"):
                    self._gap_unknown(saved, "file truncated while the agent was stopped, and no rotated copy "
                                             "was found")
            else:  # its inode now holds another file: the file itself is gone
                self._settle_lost(saved, "file gone while the agent was stopped (its inode holds another file)",
                                  inode_reused=True)

    def _settle_lost(self, saved: Position, what: str, inode_reused: bool = False) -> None:
        """A file gone before its saved position was known to be its end: a gap says what was lost,
        exactly when its compressed archive or its last known size tells."""
        if self._settled_by_archive(saved, what):
            return
        if saved.size and saved.offset < saved.size:
            self._count("files_gone_unread")
            self._gap_unknown(saved, what)
            return
        self._count("files_gone_drained")
        if saved.size and self._replaced_live_file(saved, inode_reused):
            # Read to its end when the agent stopped; whether its writer appended before it was rotated
            # away cannot be known without the rotated file. Said here, not sealed as a loss.
            log.warning("a live file was rotated away while the agent was stopped and its rotated file is gone; "
                        "lines appended after the agent stopped, if any, were not read",
                        extra={"path": saved.path, "read_to": saved.offset})
        elif not saved.size:
            self._gap_unknown(saved, what)  # saved by an older agent: how far the file went is unknown

    def _settled_by_archive(self, saved: Position, what: str) -> bool:
        folders = sorted({os.path.dirname(saved.path)} | {os.path.dirname(p) for p in self._patterns})
        for path, st in _regular_files(folders):
            if st.st_size == 0 or f"{st.st_dev}:{st.st_ino}" in self._cursors:
                continue
            try:
                with open(path, "rb") as f:
                    magic = f.read(8)
            except OSError:
                continue
            found = match_archive(path, magic, saved.head_len, saved.head, saved.offset, saved.tail, fingerprint)
            if found is None:
                continue
            self._count("files_found_archived")
            if found.length > saved.offset:
                self.gaps.append(Gap(saved.path, saved.offset, found.length,
                                     f"{what}; its rest was compressed into {found.path} before it was read"))
                log.warning("a file was compressed away before it was read to its end; bytes lost",
                            extra={"path": saved.path, "archive": found.path, "from": saved.offset,
                                   "to": found.length})
            return True
        return False

    def _replaced_live_file(self, saved: Position, inode_reused: bool) -> bool:
        """Was this the live file of its log, now replaced by a file we never saw (rotated away while the
        agent was stopped)? Then lines its writer appended after the agent stopped went with it."""
        if saved.origin not in ("", saved.path):
            return False  # already a rotated file when it was last read
        try:
            st = os.stat(saved.path)
        except OSError:
            return False  # removed, not replaced: a rotated file's end of life
        return inode_reused or f"{st.st_dev}:{st.st_ino}" not in self._saved_keys

    def _matched(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self._patterns) or path in self._matches()

    def _gap_unknown(self, saved: Position, reason: str) -> None:
        end = max(saved.offset, saved.size)
        how_much = "how much is unknown" if end == saved.offset else "at least these bytes; more is unknown"
        self.gaps.append(Gap(saved.path, saved.offset, end, f"{reason}; what was written after the saved "
                                                           f"position is lost ({how_much})"))
        log.warning("a file was lost while the agent was stopped; lines after the saved position may be lost",
                    extra={"reason": reason, "path": saved.path, "from": saved.offset})

    def _reopen_retired(self, saved: Position) -> bool:
        """A file renamed out of the globs (in its folder) before it was read to its end: drain it."""
        for path, st in _regular_files([os.path.dirname(saved.path)]):
            if (st.st_dev, st.st_ino) == (saved.dev, saved.ino):
                return self._reopen_at(path, saved)
        return False

    def _reopen_at(self, path: str, saved: Position) -> bool:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - lives as long as the cursor
        except OSError:
            return False
        st = os.fstat(handle.fileno())
        head = os.pread(handle.fileno(), saved.head_len, 0)
        if ((st.st_dev, st.st_ino) != (saved.dev, saved.ino) or fingerprint(head) != saved.head
                or st.st_size < saved.offset or not self._tail_matches(handle, saved)):
            handle.close()
            return False
        cursor = _Cursor(path, st.st_dev, st.st_ino, saved.offset, handle, saved.head, saved.head_len,
                         saved.tail, saved.origin)
        cursor.seen = False  # outside the globs: read to its end, then closed
        self._cursors[saved.key] = cursor
        self._count("files_reopened_outside_globs")
        log.info("file renamed out of the globs before it was read to its end; draining it", extra={"path": path})
        return True

    def _matches(self) -> list[str]:
        paths: list[str] = []
        for pattern in self._patterns:
            for path in sorted(glob.glob(pattern)):
                if path not in paths:
                    paths.append(path)
        return paths

    def _track(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            if path not in self._warned:
                self._count("skipped_not_regular")
            self._warn_once(path, "not a regular file, skipped", mode=f"{st.st_mode:o}")
            return
        key = f"{st.st_dev}:{st.st_ino}"
        cursor = self._cursors.get(key)
        if cursor is not None:
            cursor.seen = True
            if cursor.path != path:
                self._count("rotations.rename")
                cursor.path = path
            return
        if key in self._ignored:
            return
        try:
            handle = open(path, "rb")  # noqa: SIM115 - lives as long as the cursor
        except OSError as exc:
            if path not in self._warned:
                self._count("unreadable")
            self._warn_once(path, "cannot open file, will retry", reason=exc.strerror)
            return
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            handle.close()  # replaced between stat and open; the next scan picks up the new file
            return
        self._warned.discard(path)
        head = os.pread(handle.fileno(), FINGERPRINT_BYTES, 0)
        if head.startswith(COMPRESSED_MAGIC):
            handle.close()
            self._ignore_compressed(key, path)
            return
        if self._adopt_as_copy(path, st, handle, head):
            return
        saved = self._resume.get(key)
        offset = self._resume_offset(key, path, st.st_size, head)
        head_len = min(len(head), offset) if offset else len(head)
        origin = saved.origin if saved is not None and offset else path
        self._cursors[key] = _Cursor(path, st.st_dev, st.st_ino, offset, handle, fingerprint(head[:head_len]),
                                     head_len, "", origin)
        self._count("files_opened")

    def _ignore_compressed(self, key: str, path: str) -> None:
        self._ignored.add(key)
        self._count("skipped_compressed")
        log.info("compressed file under a glob is not read as a log", extra={"path": path})

    def _resume_offset(self, key: str, path: str, size: int, head: bytes) -> int:
        resume = self._resume.pop(key, None)
        if resume is None:
            return 0
        if resume.head_len and fingerprint(head[:resume.head_len]) != resume.head:
            self._count("inode_reused")
            log.warning("file has a saved position but other content (inode reused); reading from the start",
                        extra={"path": path, "saved_path": resume.path})
            self._orphans[key] = resume
            self._orphaned_at[key] = self._scans
            return 0
        if resume.offset > size:
            self._count("truncations")
            log.warning("file shrank below its saved position while the agent was stopped; reading from the start, "
                        "and the rest from a rotated copy if one turns up",
                        extra={"path": path, "saved": resume.offset, "size": size})
            self._orphans[key] = resume
            self._orphaned_at[key] = self._scans
            self._truncated_orphans.add(key)
            return 0
        return resume.offset

    def _adopt_as_copy(self, path: str, st: os.stat_result, handle: BinaryIO, head: bytes) -> bool:
        """Is this new file the rotated copy of a file being read (copytruncate)? Then continue in it."""
        key = f"{st.st_dev}:{st.st_ino}"
        # Too short to tell (a copy just begun is empty at first): wait until it is not, or a few scans.
        if len(head) < FINGERPRINT_BYTES and self._starts_a_file_being_read(head) and self._still_deferred(key):
            handle.close()
            return True
        owners: list[_Cursor | Position] = [*self._cursors.values(),
                                            *(p for k, p in self._resume.items() if k != key),
                                            *(p for k, p in self._orphans.items() if k != key)]
        for owner in owners:
            if not owner.head or owner.head_len < FINGERPRINT_BYTES or fingerprint(head[:owner.head_len]) != owner.head:
                continue
            copying = st.st_size < owner.offset  # a copy still being written has the head but not the rest
            if not copying and not self._tail_matches(handle, owner):
                continue
            orphan = isinstance(owner, Position) and self._orphans.get(owner.key) is owner
            if copying or (not orphan and not self._truncated_or_gone(owner)):
                # Looks like a copy being made, or a copy of a file still being read (copytruncate
                # copies, then truncates): wait a few scans; a copy that stays is a file of its own.
                if self._still_deferred(key):
                    handle.close()
                    if self._deferred[key][0] == self._scans:
                        self._count("copies_deferred")
                    return True
                continue
            if isinstance(owner, _Cursor):
                del self._cursors[owner.key]
                owner.handle.close()
                saved = owner.position()
            else:
                del (self._orphans if orphan else self._resume)[owner.key]
                saved = owner
            self._cursors[f"{st.st_dev}:{st.st_ino}"] = _Cursor(
                path, st.st_dev, st.st_ino, saved.offset, handle, saved.head, saved.head_len, saved.tail,
                saved.origin or saved.path)
            self._read_after_copy(saved.key)
            self._count("rotations.copytruncate")
            log.info("continuing a truncated file in its rotated copy",
                     extra={"path": saved.path, "copy": path, "offset": saved.offset})
            return True
        return False

    def _still_deferred(self, key: str) -> bool:
        """Note a look at a file that may be a copy; True while it is within its COPY_WAIT_SCANS."""
        first, latest = self._deferred.get(key, (self._scans, self._scans))
        if latest < self._scans - 1:
            first = self._scans  # not looked at in the last scan: another file under a reused inode
        self._deferred[key] = (first, self._scans)
        return self._scans - first < COPY_WAIT_SCANS

    def _starts_a_file_being_read(self, head: bytes) -> bool:
        """Are these bytes (fewer than a fingerprint) the start of a file being read?"""
        for cursor in self._cursors.values():
            if cursor.head_len >= FINGERPRINT_BYTES:
                try:
                    if os.pread(cursor.handle.fileno(), len(head), 0) == head:
                        return True
                except OSError:
                    continue
        return False

    def _read_after_copy(self, key: str) -> None:
        """Put the truncated file's cursor after its copy's: equally old files are read in this order."""
        cursor = self._cursors.pop(key, None)
        if cursor is not None:
            self._cursors[key] = cursor

    @staticmethod
    def _tail_matches(handle: BinaryIO, owner: _Cursor | Position) -> bool:
        if not owner.tail:
            return True
        start = max(0, owner.offset - FINGERPRINT_BYTES)
        return fingerprint(os.pread(handle.fileno(), owner.offset - start, start)) == owner.tail

    @staticmethod
    def _truncated_or_gone(owner: _Cursor | Position) -> bool:
        if isinstance(owner, Position):
            # Saved before a restart: gone unless a file still carries its inode where it was.
            try:
                st = os.stat(owner.path)
            except OSError:
                return True
            return (st.st_dev, st.st_ino) != (owner.dev, owner.ino) or st.st_size < owner.offset
        try:
            st = os.fstat(owner.handle.fileno())
            # Truncated and written again past the cursor: the bytes before it are no longer ours.
            return st.st_size < owner.offset or st.st_nlink == 0 or not Tailer._tail_matches(owner.handle, owner)
        except OSError:
            return True

    def _at_eof(self, cursor: _Cursor) -> bool:
        try:
            return os.fstat(cursor.handle.fileno()).st_size <= cursor.offset
        except OSError:
            return True

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> Iterator[Chunk]:
        """New complete lines, at most one read per file. The cursor moves past a chunk as it is
        handed out, so a consumer that stops in the middle of one must record its own position.

        Files are read least recently modified first, and of the files of one log (same `origin`:
        the live file and its rotated predecessors) only one in a pass while it has lines left, so the
        rest of a rotated file (renamed or copied away) is read to its end before the first lines of
        the file that replaced it, however many reads that takes."""
        draining: set[str] = set()
        for cursor in sorted(self._cursors.values(), key=self._modified_ns):
            if cursor.origin in draining:
                continue
            chunk = self._read_cursor(cursor)
            if chunk is not None:
                yield chunk
                if cursor.key in self._cursors and not self._at_eof(cursor):
                    draining.add(cursor.origin)

    @staticmethod
    def _modified_ns(cursor: _Cursor) -> int:
        try:
            return os.fstat(cursor.handle.fileno()).st_mtime_ns
        except OSError:
            return 0

    def _truncated(self, cursor: _Cursor, size: int) -> bool:
        """The file under a cursor shrank below it: find the rest in a copy (True), else record the gap."""
        self._count("truncations")
        copy = self._find_copy(cursor)
        if copy is not None:
            path, st, handle = copy
            self._cursors[f"{st.st_dev}:{st.st_ino}"] = _Cursor(
                path, st.st_dev, st.st_ino, cursor.offset, handle, cursor.head, cursor.head_len, cursor.tail,
                cursor.origin)
            self._read_after_copy(cursor.key)
            self._count("rotations.copytruncate")
            log.info("file truncated; reading its rest from the rotated copy",
                     extra={"path": cursor.path, "copy": path, "offset": cursor.offset})
        elif cursor.last_size > cursor.offset:
            self.gaps.append(Gap(cursor.path, cursor.offset, cursor.last_size,
                                 "file truncated before it was read to the end, and no rotated copy was found"))
            log.warning("file truncated before it was read; bytes lost",
                        extra={"path": cursor.path, "from": cursor.offset, "to": cursor.last_size})
        else:
            # Lines may have been appended after our last look and truncated away before the next:
            # we cannot know how many, but loss is never silent, so say where it would start.
            self.gaps.append(Gap(cursor.path, cursor.offset, cursor.offset,
                                 "file truncated and no rotated copy was found; whatever was written after the "
                                 "last read and before the truncation is lost (how much is unknown)"))
            log.warning("file truncated and no rotated copy found; bytes written after the last read may be lost",
                        extra={"path": cursor.path, "from": cursor.offset})
        cursor.offset = 0
        cursor.last_size = size
        head = os.pread(cursor.handle.fileno(), FINGERPRINT_BYTES, 0)
        cursor.head, cursor.head_len, cursor.tail = fingerprint(head), len(head), ""
        return copy is not None

    def _find_copy(self, cursor: _Cursor) -> tuple[str, os.stat_result, BinaryIO] | None:
        if not cursor.head or cursor.head_len < FINGERPRINT_BYTES:
            return None
        folders = {os.path.dirname(cursor.path)} | {os.path.dirname(p) for p in self._patterns}
        for path, st in _regular_files(sorted(folders)):
            if ((st.st_dev, st.st_ino) == (cursor.dev, cursor.ino) or st.st_size < cursor.offset
                    or f"{st.st_dev}:{st.st_ino}" in self._cursors):
                continue
            try:
                handle = open(path, "rb")  # noqa: SIM115 - handed to the new cursor
            except OSError:
                continue
            head = os.pread(handle.fileno(), cursor.head_len, 0)
            if fingerprint(head) == cursor.head and self._tail_matches(handle, cursor):
                return path, st, handle
            handle.close()
        return None

    def _read_cursor(self, cursor: _Cursor) -> Chunk | None:
        fd = cursor.handle.fileno()
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return None
        if (size < cursor.offset or (size > cursor.offset and not self._tail_matches(cursor.handle, cursor))) \
                and self._truncated(cursor, size):
            return None  # the copy's rest is read first (it is the older file), then this file's new start
        cursor.last_size = max(cursor.last_size, size)
        if size == cursor.offset:
            return None
        start = cursor.offset
        try:
            data = os.pread(fd, self._chunk, start)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return None
            self._warn_once(cursor.path, "read failed, will retry", reason=exc.strerror)
            return None
        if start == 0 and data.startswith(COMPRESSED_MAGIC):
            # Opened while still empty, then filled by a compressor (logrotate's `compress`): not a log.
            self._ignore_compressed(cursor.key, cursor.path)
            cursor.handle.close()
            del self._cursors[cursor.key]
            return None
        last_newline = data.rfind(b"\n")
        if last_newline < 0 and len(data) < self._max_line and len(data) >= self._chunk:
            # No newline in a whole read: look further, up to the longest line we wait for.
            data = os.pread(fd, self._max_line, start)
            last_newline = data.rfind(b"\n")
        if last_newline < 0:
            if len(data) >= self._max_line or (not cursor.seen and data):
                # A line longer than max_line_bytes, or the unterminated tail of a file that left the glob:
                # hand it out as it is rather than stall behind it.
                piece = data[:self._max_line]
                cursor.offset += len(piece)
                self._after_read(cursor, piece)
                continues = len(piece) >= self._max_line
                if continues:
                    self._count("long_line_chunks")
                return Chunk(cursor.path, cursor.dev, cursor.ino, start, [piece], continues=continues)
            return None
        consumed = data[:last_newline + 1]
        cursor.offset = start + len(consumed)
        self._after_read(cursor, consumed)
        self._count("lines_read", consumed.count(b"\n"))
        self._count("bytes_read", len(consumed))
        return Chunk(cursor.path, cursor.dev, cursor.ino, start, consumed[:-1].split(b"\n"))

    def _after_read(self, cursor: _Cursor, consumed: bytes) -> None:
        """Keep the fingerprints current: the head until it is full, the tail always."""
        if cursor.head_len < FINGERPRINT_BYTES and cursor.offset > cursor.head_len:
            head = os.pread(cursor.handle.fileno(), FINGERPRINT_BYTES, 0)
            head = head[:min(len(head), cursor.offset)]
            cursor.head, cursor.head_len = fingerprint(head), len(head)
        if len(consumed) >= FINGERPRINT_BYTES:
            cursor.tail = fingerprint(consumed[-FINGERPRINT_BYTES:])
        else:
            start = max(0, cursor.offset - FINGERPRINT_BYTES)
            cursor.tail = fingerprint(os.pread(cursor.handle.fileno(), cursor.offset - start, start))

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.handle.close()
        self._cursors.clear()
