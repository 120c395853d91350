from __future__ import annotations

import threading
from pathlib import Path

from agent.watch import ChangeWatcher, watch_roots


def test_roots_are_the_existing_folders_of_the_globs(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    patterns = [str(tmp_path / "audit" / "*.log"), str(tmp_path / "missing" / "x.log"), str(tmp_path / "*" / "y")]
    assert watch_roots(patterns) == {str(tmp_path / "audit")}


def test_an_appended_line_wakes_the_agent(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    wake = threading.Event()
    watcher = ChangeWatcher([str(tmp_path / "*.log")], wake)
    watcher.start()
    try:
        with log.open("ab") as f:
            f.write(b"line\n")
        assert wake.wait(10), "no change notification within 10 s"
        (tmp_path / "b.log").write_bytes(b"new\n")
        assert watcher.rescan.wait(10), "a new file did not ask for a rescan within 10 s"
    finally:
        watcher.stop()
