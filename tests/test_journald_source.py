"""A journald source follows `journalctl --output=export --follow` and resumes by cursor: after a
kill -9 every entry is stored exactly once."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

import orjson

from agent.localrun import Workspace, wait_for
from tests.conftest import run_cli

FAKE_JOURNALCTL = Path(__file__).parent / "tools" / "fake_journalctl.py"


def entry(i: int) -> bytes:
    return (f"__CURSOR=s=0b1c;i={i:x};b=77;m={i:x};t=5f{i:010x};x=ab{i:x}\n"
            f"__REALTIME_TIMESTAMP={1764151200000000 + i * 1000}\n"
            f"_BOOT_ID=77\n_PID={1000 + i}\n_UID=0\n_COMM=sshd\n_EXE=/usr/sbin/sshd\n"
            f"_SYSTEMD_UNIT=ssh.service\nSYSLOG_IDENTIFIER=sshd\nPRIORITY=6\n_HOSTNAME=node-1\n"
            f"MESSAGE=Accepted publickey for user{i % 7} from 192.0.2.{i % 250} port {40000 + i} ssh2\n\n").encode()


def test_journal_entries_are_stored_exactly_once_across_a_kill(workspace: Workspace) -> None:
    journal = workspace.root / "journal.export"
    journal.write_bytes(b"".join(entry(i) for i in range(200)))
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    command = [sys.executable, str(FAKE_JOURNALCTL), "--source", str(journal), "--output=export", "--follow"]
    config = workspace.agent_config("node-1", [], extra=(
        '[[source]]\ntype = "journald"\ncommand = ' + orjson.dumps(command).decode() + "\n"
        "[batch]\nmax_events = 30\nlinger_ms = 20\n"))
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 30, 60, "the first journal batches to be stored")
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    with journal.open("ab") as f:
        f.write(b"".join(entry(i) for i in range(200, 260)))
    again = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 260, 60, "every journal entry to be stored")
    assert again.stop() == 0, again.log_text()
    assert aggregator.stop() == 0
    result = run_cli("query", str(workspace.store), "--dataset", "journald", "--json")
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    cursors = Counter(e["journald"]["cursor"] for e in events)
    assert len(cursors) == 260 and max(cursors.values()) == 1
    assert {e["process"]["pid"] for e in events} == {1000 + i for i in range(260)}
    assert run_cli("verify", str(workspace.store)).returncode == 0
