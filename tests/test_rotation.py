"""Every kind of rotation: each line is read exactly once, or a gap names the bytes that were lost."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from agent.tail import COPY_WAIT_SCANS, Position, Tailer


def line(i: int) -> bytes:
    # Long enough lines that the 256-byte fingerprints see real content.
    return f"2026-11-26T10:00:00Z host app[1]: event number {i:06d} ".encode() + b"x" * 60


@pytest.fixture
def tailers() -> Iterator[list[Tailer]]:
    made: list[Tailer] = []
    yield made
    for t in made:
        t.close()


def tailer(made: list[Tailer], pattern: Path, positions: dict[str, Position] | None = None) -> Tailer:
    t = Tailer([str(pattern)], positions or {}, 1 << 20)
    made.append(t)
    t.scan()
    return t


def drain(t: Tailer, scans: int = 1) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(scans):
        t.scan()
        for _ in range(5):
            for chunk in t.read():
                out.extend(chunk.lines)
    return out


def write(path: Path, lines: range) -> None:
    with path.open("ab") as f:
        f.write(b"".join(line(i) + b"\n" for i in lines))


def test_rename_and_create_drains_the_old_file_then_reads_the_new(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    t = tailer(tailers, tmp_path / "audit*.log")
    got = drain(t)
    write(log, range(10, 15))  # written after our last read, just before the rotation
    os.rename(log, tmp_path / "audit-2026-11-26T10-00-00.000.log")  # kube-apiserver's backup name
    write(log, range(15, 20))
    got += drain(t, scans=2)
    assert got == [line(i) for i in range(20)] or sorted(got) == [line(i) for i in range(20)]
    assert t.counters["rotations.rename"] == 1


def test_copytruncate_reads_the_rest_from_the_copy_and_the_new_start_once(tmp_path: Path,
                                                                         tailers: list[Tailer]) -> None:
    log = tmp_path / "app.log"
    write(log, range(20))
    t = tailer(tailers, tmp_path / "app.log*")
    got = drain(t)
    write(log, range(20, 30))  # not read yet when logrotate runs
    shutil.copy(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, range(30, 35))
    got += drain(t, scans=3)
    assert sorted(got) == [line(i) for i in range(35)]
    assert len(got) == 35
    assert t.counters["rotations.copytruncate"] == 1
    assert t.take_gaps() == []


def test_copytruncate_without_a_findable_copy_records_a_gap(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    write(log, range(20))
    t = tailer(tailers, log)
    drain(t)
    write(log, range(20, 30))
    unread_from, unread_to = log.stat().st_size - 10 * (len(line(0)) + 1), log.stat().st_size
    t.scan()
    next(iter(t._cursors.values())).last_size = unread_to  # noqa: SLF001 - the agent had seen the growth
    shutil.copy(log, tmp_path / "elsewhere.log")  # the copy went where no glob looks
    os.truncate(log, 0)
    write(log, range(30, 32))
    got = drain(t)
    assert got == [line(30), line(31)]
    (gap,) = t.take_gaps()
    assert (gap.path, gap.start, gap.end) == (str(log), unread_from, unread_to)
    assert "no rotated copy" in gap.reason


def test_rotate_then_compress_drains_the_renamed_file_and_never_reads_the_archive(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "syslog"
    write(log, range(10))
    t = tailer(tailers, tmp_path / "syslog*")
    got = drain(t)
    write(log, range(10, 12))
    os.rename(log, tmp_path / "syslog.1")
    write(log, range(12, 14))
    t.scan()  # the agent sees the renamed file (and keeps it open) before the compressor runs
    with (tmp_path / "syslog.1").open("rb") as src, gzip.open(tmp_path / "syslog.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(tmp_path / "syslog.1")
    got += drain(t, scans=2)
    assert sorted(got) == [line(i) for i in range(14)]
    assert t.counters["skipped_compressed"] == 1


def test_file_deleted_while_open_is_drained(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(5))
    t = tailer(tailers, log)
    got = drain(t)
    write(log, range(5, 9))
    os.unlink(log)
    got += drain(t, scans=2)
    assert got == [line(i) for i in range(9)]
    assert t.counters["files_closed"] == 1


def test_a_reused_inode_with_other_content_is_read_from_the_start(tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(100, 110))
    st = log.stat()
    saved = Position(str(log), st.st_dev, st.st_ino, 500, head="0123456789abcdef", head_len=256)
    t = tailer(tailers, log, {saved.key: saved})
    assert drain(t) == [line(i) for i in range(100, 110)]
    assert t.counters["inode_reused"] == 1


def test_file_truncated_while_stopped_is_read_from_the_start_with_a_gap(tmp_path: Path,
                                                                       tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(3))
    st = log.stat()
    saved = Position(str(log), st.st_dev, st.st_ino, 10_000)
    t = tailer(tailers, log, {saved.key: saved})
    assert drain(t) == [line(i) for i in range(3)]
    assert t.take_gaps() == []  # a rotated copy may still turn up and hold the rest
    assert drain(t, scans=COPY_WAIT_SCANS) == []
    (gap,) = t.take_gaps()
    assert (gap.start, gap.end) == (10_000, 10_000) and "stopped" in gap.reason and "unknown" in gap.reason


def test_a_file_deleted_while_stopped_with_unread_lines_is_a_gap_from_the_saved_position(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, log)
    assert len(drain(t)) == 10
    write(log, range(10, 12))  # seen, not yet read, when the agent stops
    t.scan()
    t._cursors[next(iter(t._cursors))].last_size = log.stat().st_size
    saved = t.positions()
    t.close()
    read_to = next(iter(saved.values())).offset
    log.unlink()
    after = tailer(tailers, log, saved)
    assert drain(after, scans=COPY_WAIT_SCANS) == []
    (gap,) = after.take_gaps()
    assert (gap.path, gap.start, gap.end) == (str(log), read_to, log_size_of(range(12)))
    assert "gone while the agent was stopped" in gap.reason
    assert after.counters["files_gone_unread"] == 1
    assert after.positions() == {}  # said once, then forgotten


def log_size_of(lines: range) -> int:
    return sum(len(line(i)) + 1 for i in lines)


def test_a_rotated_file_read_to_its_end_and_deleted_while_stopped_is_no_loss(tmp_path: Path,
                                                                             tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, tmp_path / "a.log*")
    assert len(drain(t)) == 10
    os.rename(log, tmp_path / "a.log.1")
    write(log, range(10, 12))
    assert drain(t) == [line(i) for i in range(10, 12)]
    saved = t.positions()
    t.close()
    (tmp_path / "a.log.1").unlink()
    after = tailer(tailers, tmp_path / "a.log*", saved)
    assert drain(after, scans=COPY_WAIT_SCANS) == []
    assert after.take_gaps() == []
    assert after.counters["files_gone_drained"] == 1


def test_a_file_renamed_out_of_the_globs_while_stopped_is_drained_by_its_saved_path(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    t = tailer(tailers, log)
    assert len(drain(t)) == 10
    saved = t.positions()
    t.close()
    write(log, range(10, 15))  # written while the agent is down, then rotated out of the glob
    os.rename(log, tmp_path / "audit-2026-11-26T10-00-00.000.log.bak")
    write(log, range(15, 17))
    after = tailer(tailers, log, saved)
    got = drain(after, scans=COPY_WAIT_SCANS + 1)
    assert sorted(got) == [line(i) for i in range(10, 17)]  # the new file at once, the renamed one's rest later
    assert after.take_gaps() == []
    assert after.counters["files_reopened_outside_globs"] == 1


def test_symlinked_paths_are_followed_and_named_by_the_link(tmp_path: Path, tailers: list[Tailer]) -> None:
    pods = tmp_path / "pods" / "default_web_uid" / "app"
    pods.mkdir(parents=True)
    target = pods / "0.log"
    write(target, range(3))
    containers = tmp_path / "containers"
    containers.mkdir()
    link = containers / "web_default_app-0123.log"
    link.symlink_to(target)
    t = tailer(tailers, containers / "*.log")
    got = []
    for chunk in t.read():
        assert chunk.path == str(link)
        got += chunk.lines
    assert got == [line(i) for i in range(3)]


def test_a_plain_copy_of_a_live_file_is_not_read_as_a_repeat_but_as_a_file_of_its_own_later(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, tmp_path / "*.log")
    assert len(drain(t)) == 10
    shutil.copy(log, tmp_path / "b.log")
    assert drain(t, scans=COPY_WAIT_SCANS - 1) == []  # waiting for a truncation that does not come
    assert t.counters["copies_deferred"] == 1
    assert len(drain(t, scans=2)) == 10  # then it is a file like any other


def test_a_path_replaced_by_a_directory_is_skipped_and_others_go_on(tmp_path: Path, tailers: list[Tailer]) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write(a, range(2))
    write(b, range(2, 4))
    t = tailer(tailers, tmp_path / "*.log")
    assert sorted(drain(t)) == [line(i) for i in range(4)]
    os.unlink(a)
    a.mkdir()
    write(b, range(4, 6))
    assert drain(t, scans=2) == [line(4), line(5)]
    assert t.counters["skipped_not_regular"] == 1


def test_a_live_file_rotated_and_compressed_away_while_stopped_is_an_exact_gap_read_off_the_archive(
        tmp_path: Path, tailers: list[Tailer]) -> None:
    """Its writer appended after the agent stopped, and those lines went into the archive: the archive,
    read decompressed, says exactly which bytes were not read."""
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, log)
    assert len(drain(t)) == 10
    saved = t.positions()
    t.close()
    write(log, range(10, 12))
    with log.open("rb") as src, gzip.open(tmp_path / "a.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    log.unlink()
    write(log, range(12, 14))
    after = tailer(tailers, log, saved)
    assert drain(after, scans=COPY_WAIT_SCANS) == [line(i) for i in range(12, 14)]
    (gap,) = after.take_gaps()
    assert (gap.path, gap.start, gap.end) == (str(log), log_size_of(range(10)), log_size_of(range(12)))
    assert "a.log.1.gz" in gap.reason


@pytest.mark.parametrize("compress", ["gzip", "xz", "zstd", "bzip2"])
def test_a_file_read_to_its_end_then_compressed_away_while_stopped_is_no_loss(
        tmp_path: Path, tailers: list[Tailer], compress: str) -> None:
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, log)
    assert len(drain(t)) == 10
    saved = t.positions()
    t.close()
    data = log.read_bytes()
    packed = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress,
              "zstd": zstandard.ZstdCompressor().compress}[compress](data)
    (tmp_path / "a.log.1.packed").write_bytes(packed)
    log.unlink()
    write(log, range(10, 12))
    after = tailer(tailers, log, saved)
    assert drain(after, scans=COPY_WAIT_SCANS) == [line(i) for i in range(10, 12)]
    assert after.take_gaps() == []
    assert after.counters["files_found_archived"] == 1


def test_a_live_file_read_to_its_end_and_deleted_while_stopped_is_logged_not_sealed(
        tmp_path: Path, tailers: list[Tailer], caplog: pytest.LogCaptureFixture) -> None:
    """Whether its writer appended after the agent stopped cannot be known: a warning, no gap record."""
    log = tmp_path / "a.log"
    write(log, range(10))
    t = tailer(tailers, log)
    assert len(drain(t)) == 10
    saved = t.positions()
    t.close()
    log.unlink()
    write(log, range(10, 12))
    after = tailer(tailers, log, saved)
    assert drain(after, scans=COPY_WAIT_SCANS) == [line(i) for i in range(10, 12)]
    assert after.take_gaps() == []
    assert any("rotated away while the agent was stopped" in r.getMessage() for r in caplog.records)
