"""An agent given several aggregators fails over to the next when one cannot be reached."""

from __future__ import annotations

from pathlib import Path

from agent.localrun import Workspace, wait_for
from tests.conftest import free_port


def test_an_agent_whose_first_aggregator_is_down_ships_to_the_next(workspace: Workspace, tmp_path: Path) -> None:
    workspace.enrol("node-1")
    workspace.start_aggregator()
    log = tmp_path / "auth.log"
    log.write_text("".join(f"Nov 26 10:00:{i:02d} host sshd[7]: line {i}\n" for i in range(50)))
    down = free_port()  # nothing listens here
    config = workspace.agent_config("node-1", [("syslog", str(log))], extra="[ship]\nbackoff_initial_ms = 20\n")
    text = config.read_text().replace(f'aggregator = "127.0.0.1:{workspace.port}"',
                                      f'aggregator = ["127.0.0.1:{down}", "127.0.0.1:{workspace.port}"]')
    config.write_text(text)
    agent = workspace.start_agent(config)
    wait_for(lambda: workspace.stored_events() >= 50, 30, "the 50 lines to reach the second aggregator")
    assert workspace.stored_events() == 50
    agent.stop()
    lines = [line for line in agent.log_text().splitlines() if "failing over to the next aggregator" in line]
    assert lines and f"127.0.0.1:{workspace.port}" in lines[0]
