"""The tailer hands out complete lines once, follows renames, and reads new files from the start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tail import Position, Tailer


@pytest.fixture
def tailers() -> Iterator[list[Tailer]]:
    made: list[Tailer] = []
    yield made
    for t in made:
        t.close()


def lines(tailer: Tailer) -> list[tuple[str, int, bytes]]:
    out = []
    for chunk in tailer.read():
        offset = chunk.offset
        for line in chunk.lines:
            out.append((Path(chunk.path).name, offset, line))
            offset += len(line) + 1
    return out


def test_files_present_at_start_are_read_from_the_beginning(tmp_path: Path, tailers: list[Tailer]) -> None:
    (tmp_path / "a.log").write_bytes(b"one\ntwo\n")
    tailer = Tailer([str(tmp_path / "*.log")], {}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    assert lines(tailer) == [("a.log", 0, b"one"), ("a.log", 4, b"two")]
    assert lines(tailer) == []


def test_partial_last_line_waits_for_its_newline(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntw")
    tailer = Tailer([str(log)], {}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    assert lines(tailer) == [("a.log", 0, b"one")]
    with log.open("ab") as f:
        f.write(b"o\n")
    assert lines(tailer) == [("a.log", 4, b"two")]


def test_renamed_file_keeps_its_cursor_and_new_file_is_read(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"a\nb\n")
    tailer = Tailer([str(tmp_path / "audit.log*")], {}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    assert [x[2] for x in lines(tailer)] == [b"a", b"b"]
    with log.open("ab") as f:
        f.write(b"c\n")
    os.rename(log, tmp_path / "audit.log.1")  # rotation: the old file still matches the glob
    log.write_bytes(b"new\n")
    tailer.scan()
    assert sorted(x[2] for x in lines(tailer)) == [b"c", b"new"]  # c read once, not the whole old file again
    assert lines(tailer) == []


def test_resumes_from_saved_positions(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\nthree\n")
    st = log.stat()
    saved = Position(str(log), st.st_dev, st.st_ino, 8)
    tailer = Tailer([str(log)], {saved.key: saved}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    assert lines(tailer) == [("a.log", 8, b"three")]
    assert tailer.positions()[saved.key].offset == 14


def test_line_longer_than_a_read_is_handed_out_in_pieces_not_stalled(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"x" * 10_000 + b"\nafter\n")
    tailer = Tailer([str(log)], {}, 4096, max_line_bytes=4096)
    tailers.append(tailer)
    tailer.scan()
    pieces = []
    for _ in range(10):
        for chunk in tailer.read():
            pieces.append((chunk.lines, chunk.continues))
    joined = b"".join(b"\n".join(c) + (b"" if cont else b"\n") for c, cont in pieces)
    assert joined == b"x" * 10_000 + b"\nafter\n"
    assert pieces[0][1] is True


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")
    tailer = Tailer([str(log)], {}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    lines(tailer)
    log.write_bytes(b"3\n")
    assert lines(tailer) == [("a.log", 0, b"3")]


def test_fifo_and_directories_under_a_glob_are_skipped(tmp_path: Path, tailers: list[Tailer]) -> None:
    os.mkfifo(tmp_path / "pipe.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "real.log").write_bytes(b"ok\n")
    tailer = Tailer([str(tmp_path / "*.log")], {}, 1 << 20)
    tailers.append(tailer)
    tailer.scan()
    assert lines(tailer) == [("real.log", 0, b"ok")]
