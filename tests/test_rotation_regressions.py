"""Rotation cases the chaos harness (tests/chaos) found broken, each replayed against the tailer alone."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tail import Tailer


def line(i: int) -> bytes:
    return f"2026-11-26T10:00:00Z host app[1]: event number {i:06d} ".encode() + b"x" * 60


def write(path: Path, lines: range) -> None:
    with path.open("ab") as f:
        f.write(b"".join(line(i) + b"\n" for i in lines))


@pytest.fixture
def tailers() -> Iterator[list[Tailer]]:
    made: list[Tailer] = []
    yield made
    for t in made:
        t.close()


def drain(t: Tailer, scans: int = 1) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(scans):
        t.scan()
        for _ in range(5):
            for chunk in t.read():
                out.extend(chunk.lines)
    return out


def test_copytruncate_while_the_agent_was_stopped_reads_the_rest_from_the_copy_once(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    """Found by the chaos harness: a restarted agent read the rotated copy from its start (every
    line already stored came again), because the truncated file's saved position was dropped as
    "inode reused" before the copy was looked at."""
    log = tmp_path / "app.log"
    write(log, range(20))
    before = Tailer([str(tmp_path / "app.log*")], {}, 1 << 20)
    tailers.append(before)
    assert drain(before) == [line(i) for i in range(20)]
    saved = before.positions()
    before.close()
    write(log, range(20, 30))  # written while the agent is down, then logrotate copytruncates
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, range(30, 35))
    after = Tailer([str(tmp_path / "app.log*")], saved, 1 << 20)
    tailers.append(after)
    assert drain(after, scans=2) == [line(i) for i in range(20, 35)]  # once each, the copy's rest first
    assert after.counters["rotations.copytruncate"] == 1
    assert after.take_gaps() == []


def test_copytruncate_while_running_reads_the_copys_rest_before_the_new_start(tmp_path: Path,
                                                                              tailers: list[Tailer]) -> None:
    """Found by the chaos harness: lines written after the truncation were stored before the
    older lines still to be read from the copy."""
    log = tmp_path / "app.log"
    write(log, range(20))
    t = Tailer([str(tmp_path / "app.log*")], {}, 1 << 20)
    tailers.append(t)
    t.scan()
    got = drain(t)
    write(log, range(20, 30))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, range(30, 35))
    for _ in range(5):  # no scan: the truncation is found by reading
        for chunk in t.read():
            got.extend(chunk.lines)
    got += drain(t, scans=2)
    assert got == [line(i) for i in range(35)]


def test_after_a_restart_a_renamed_file_is_read_to_its_end_before_its_successor(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    """Found by the chaos harness: after a kill -9 the new file (sorted first by name) was read
    before the rest of the renamed one, so a file's lines were stored out of order."""
    log = tmp_path / "a.log"
    write(log, range(10))
    before = Tailer([str(tmp_path / "a.log*")], {}, 1 << 20)
    tailers.append(before)
    assert len(drain(before)) == 10
    saved = before.positions()
    before.close()
    write(log, range(10, 15))
    os.rename(log, tmp_path / "a.log.1")
    write(log, range(15, 20))
    old = (tmp_path / "a.log.1").stat().st_mtime_ns
    os.utime(log, ns=(old + 10**9, old + 10**9))  # written after the rotation, as in life
    after = Tailer([str(tmp_path / "a.log*")], saved, 1 << 20)
    tailers.append(after)
    assert drain(after) == [line(i) for i in range(10, 20)]


def test_a_compressed_file_opened_while_still_empty_is_not_read(tmp_path: Path, tailers: list[Tailer]) -> None:
    """Found by the chaos harness: a `.gz` that logrotate had just created (still empty) was taken
    for a log, and the gzip bytes written into it next were shipped as lines."""
    log = tmp_path / "syslog.1"
    write(log, range(3))
    t = Tailer([str(tmp_path / "syslog*")], {}, 1 << 20)
    tailers.append(t)
    archive = tmp_path / "syslog.1.gz"
    archive.touch()
    assert drain(t) == [line(i) for i in range(3)]  # the archive is opened while empty
    # The compressor fills it: a gzip stream (whose bytes may well hold newlines).
    archive.write_bytes(gzip.compress(log.read_bytes())[:10] + b"not a line\n" * 3)
    assert drain(t, scans=2) == []
    assert t.counters["skipped_compressed"] == 1


def test_a_copy_seen_while_still_being_written_is_not_read_as_a_new_file(tmp_path: Path,
                                                                         tailers: list[Tailer]) -> None:
    """Found by the chaos harness (seed 4): a scan woken by the copy's creation saw it half written,
    shorter than the cursor, took it for a new file and read it from its start: every line already
    stored came again, and the truncation that followed found no copy."""
    log = tmp_path / "app.log"
    write(log, range(20))
    t = Tailer([str(tmp_path / "app.log*")], {}, 1 << 20)
    tailers.append(t)
    assert drain(t) == [line(i) for i in range(20)]
    content = log.read_bytes()
    copy = tmp_path / "app.log.1"
    copy.write_bytes(content[:len(content) // 2])  # logrotate is still copying
    assert drain(t) == []
    copy.write_bytes(content)
    os.truncate(log, 0)
    write(log, range(20, 25))
    assert drain(t, scans=2) == [line(i) for i in range(20, 25)]
    assert t.counters["rotations.copytruncate"] == 1


def test_a_truncation_with_no_copy_after_unseen_appends_is_never_silent(tmp_path: Path,
                                                                       tailers: list[Tailer]) -> None:
    """Found by the chaos harness's loss on purpose: lines appended while the agent was not looking,
    then copytruncated to a copy no glob finds, vanished without a gap record."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    write(log, range(20))
    t = Tailer([str(log)], {}, 1 << 20)
    tailers.append(t)
    assert len(drain(t)) == 20
    read_to = log.stat().st_size
    write(log, range(20, 30))  # never seen by the tailer
    shutil.copyfile(log, tmp_path / "elsewhere.log")
    os.truncate(log, 0)
    write(log, range(30, 32))
    assert drain(t) == [line(30), line(31)]
    (gap,) = t.take_gaps()
    assert (gap.path, gap.start, gap.end) == (str(log), read_to, read_to)
    assert "how much is unknown" in gap.reason


def test_a_reused_inode_gets_its_own_wait_for_the_truncation(tmp_path: Path, tailers: list[Tailer]) -> None:
    """Found by the chaos CI run: the copy wait was remembered per inode for ever, so a new copy that
    got the inode number of an older, long-gone copy was not waited for: it was read from its start
    (every line again) and the truncation that followed found no copy. Here the "reuse" is the same
    inode leaving the glob and coming back with new content."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    write(log, range(20))
    t = Tailer([str(tmp_path / "logs" / "app.log*")], {}, 1 << 20)
    tailers.append(t)
    assert drain(t) == [line(i) for i in range(20)]
    copy, away = tmp_path / "logs" / "app.log.1", tmp_path / "away"
    shutil.copyfile(log, copy)
    assert drain(t) == []  # a copy of a file still being read: waited for
    os.rename(copy, away)  # it goes (the file is deleted; its inode number is free again)
    assert drain(t, scans=10) == []
    write(log, range(20, 30))
    assert drain(t) == [line(i) for i in range(20, 30)]
    away.write_bytes(log.read_bytes())  # the next copytruncate's copy gets that inode number
    os.rename(away, copy)
    assert drain(t) == []  # waited for again, not read as a file of its own
    os.truncate(log, 0)
    write(log, range(30, 33))
    assert drain(t, scans=2) == [line(i) for i in range(30, 33)]
    assert t.take_gaps() == []


def test_a_copy_seen_while_still_empty_is_not_read_as_a_new_file(tmp_path: Path, tailers: list[Tailer]) -> None:
    """Found by the chaos CI run: the scan woken by the copy's creation saw it still empty, could not
    fingerprint it, and tracked it as a new file: it was read from its start (every line again), and
    the truncation that followed found no copy (a gap record for nothing lost)."""
    log = tmp_path / "app.log"
    write(log, range(20))
    t = Tailer([str(tmp_path / "app.log*")], {}, 1 << 20)
    tailers.append(t)
    assert drain(t) == [line(i) for i in range(20)]
    copy = tmp_path / "app.log.1"
    copy.touch()  # logrotate has created the copy, not yet written it
    assert drain(t) == []
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    write(log, range(20, 25))
    assert drain(t, scans=2) == [line(i) for i in range(20, 25)]
    assert t.counters["rotations.copytruncate"] == 1
    assert t.take_gaps() == []


def test_a_renamed_file_with_many_reads_left_is_drained_before_its_successor(tmp_path: Path,
                                                                             tailers: list[Tailer]) -> None:
    """Found by a 14-minute soak: with more than one read of a renamed file left, each pass read one
    chunk of the old file and one of the new, so the two files' lines interleaved."""
    log = tmp_path / "a.log"
    write(log, range(5))
    t = Tailer([str(tmp_path / "a.log*")], {}, 512)  # a few lines a read
    tailers.append(t)
    got = drain(t)
    write(log, range(5, 60))
    os.rename(log, tmp_path / "a.log.1")
    write(log, range(60, 80))
    old = (tmp_path / "a.log.1").stat().st_mtime_ns
    os.utime(log, ns=(old + 10**9, old + 10**9))
    for _ in range(40):
        t.scan()
        for chunk in t.read():
            got.extend(chunk.lines)
    assert got == [line(i) for i in range(80)]


def test_a_copys_long_rest_is_read_before_the_truncated_files_new_lines(tmp_path: Path,
                                                                         tailers: list[Tailer]) -> None:
    log = tmp_path / "app.log"
    write(log, range(20))
    t = Tailer([str(tmp_path / "app.log*")], {}, 512)
    tailers.append(t)
    got = drain(t, scans=2)
    write(log, range(20, 70))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, range(70, 90))
    for _ in range(40):
        t.scan()
        for chunk in t.read():
            got.extend(chunk.lines)
    assert got == [line(i) for i in range(90)]


def test_after_a_restart_the_files_of_one_log_are_still_read_in_turn(tmp_path: Path,
                                                                     tailers: list[Tailer]) -> None:
    """The saved position keeps the path a file was first read under, so a renamed file and its
    successor are known as one log after a restart too, however many reads the rest takes."""
    log = tmp_path / "a.log"
    write(log, range(5))
    t = Tailer([str(tmp_path / "a.log*")], {}, 512)
    tailers.append(t)
    got = drain(t)
    write(log, range(5, 60))
    os.rename(log, tmp_path / "a.log.1")
    t.scan()
    for chunk in t.read():  # one read of the renamed file, then a restart
        got.extend(chunk.lines)
        break
    saved = t.positions()
    t.close()
    assert {p.origin for p in saved.values()} == {str(log)}
    write(log, range(60, 80))
    old = (tmp_path / "a.log.1").stat().st_mtime_ns
    os.utime(log, ns=(old + 10**9, old + 10**9))
    after = Tailer([str(tmp_path / "a.log*")], saved, 512)
    tailers.append(after)
    for _ in range(40):
        after.scan()
        for chunk in after.read():
            got.extend(chunk.lines)
    assert got == [line(i) for i in range(80)]


def test_a_file_truncated_and_written_past_the_cursor_between_reads_is_read_from_its_new_start(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    """Its size alone does not show the truncation; the fingerprint of the bytes before the cursor does.
    Without a copy to read the rest from, a gap says where the loss may start."""
    log = tmp_path / "app.log"
    write(log, range(20))
    t = Tailer([str(log)], {}, 1 << 20)
    tailers.append(t)
    assert drain(t) == [line(i) for i in range(20)]
    os.truncate(log, 0)
    write(log, range(100, 130))  # larger than before the truncation
    assert drain(t) == [line(i) for i in range(100, 130)]
    gaps = t.take_gaps()
    assert [(g.path, g.start) for g in gaps] == [(str(log), 20 * len(line(0) + b"\n"))]
    assert t.counters["truncations"] == 1
