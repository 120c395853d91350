"""Rotated logs compressed away (gzip, bzip2, xz, zstd): which one holds a file's bytes, and how many.

When the agent was stopped while a file it was reading was rotated and compressed, the archive is
the only witness of what the file held after the saved position. Reading it decompressed tells the
tailer exactly whether anything was left unread, and how much: an exact gap record instead of a
guess. Archives are streamed, never loaded whole, and read at most `MAX_DECOMPRESSED_BYTES`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Protocol

import zstandard

MAX_DECOMPRESSED_BYTES = 4 << 30


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...
_READ = 1 << 20


def _zstd(path: str) -> _Stream:
    return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115


_OPENERS: tuple[tuple[bytes, Callable[[str], _Stream]], ...] = (
    (b"\x1f\x8b", lambda p: gzip.open(p, "rb")),  # noqa: SIM115 - the caller's `with` closes it
    (b"BZh", lambda p: bz2.open(p, "rb")),  # noqa: SIM115
    (b"\xfd7zXZ\x00", lambda p: lzma.open(p, "rb")),  # noqa: SIM115
    (b"\x28\xb5\x2f\xfd", _zstd),
)


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    path: str
    length: int  # bytes of the original file (decompressed)


def opener_for(magic: bytes) -> Callable[[str], _Stream] | None:
    return next((open_ for prefix, open_ in _OPENERS if magic.startswith(prefix)), None)


def match_archive(path: str, magic: bytes, head_len: int, head: str, offset: int, tail: str,
                  fingerprint: Callable[[bytes], str]) -> ArchivedFile | None:
    """The archive at `path`, if it is the file whose first `head_len` bytes and the bytes just
    before `offset` have these fingerprints; its decompressed length. Damaged archives are no match."""
    open_ = opener_for(magic)
    if open_ is None or head_len <= 0:
        return None
    try:
        with closing(open_(path)) as stream:
            first = stream.read(head_len)
            if len(first) < head_len or fingerprint(first) != head:
                return None
            length = len(first)
            while length < MAX_DECOMPRESSED_BYTES:
                piece = stream.read(_READ)
                if not piece:
                    break
                length += len(piece)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError):
        return None
    if length < offset or (tail and not _bytes_before_match(path, open_, offset, tail, fingerprint)):
        return None
    return ArchivedFile(path, length)


def _bytes_before_match(path: str, open_: Callable[[str], _Stream], offset: int, tail: str,
                        fingerprint: Callable[[bytes], str]) -> bool:
    """Do the (up to 256) bytes before `offset` have this fingerprint? A second, bounded pass."""
    start = max(0, offset - 256)
    try:
        with closing(open_(path)) as stream:
            skipped = 0
            while skipped < start:
                piece = stream.read(min(_READ, start - skipped))
                if not piece:
                    return False
                skipped += len(piece)
            return fingerprint(stream.read(offset - start)) == tail
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError):
        return False
