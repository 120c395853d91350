"""Every metric docs/metrics.md names is exported by a running agent or aggregator (the alert rules
in packaging/ rely on those names)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from agent.localrun import Workspace, wait_for
from tests.conftest import free_port

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"



def test_every_documented_metric_is_exported(workspace: Workspace) -> None:
    workspace.enrol("n1")
    aggregator_port, agent_port = free_port(), free_port()
    aggregator = workspace.start_aggregator(
        extra=f'[detect]\nrules = ["builtin:all"]\n[metrics]\nlisten = "127.0.0.1:{aggregator_port}"\n')
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    agent = workspace.start_agent(workspace.agent_config(
        "n1", [("syslog", str(log))], extra=f'[metrics]\nlisten = "127.0.0.1:{agent_port}"\n'))
    wait_for(lambda: workspace.stored_events() >= 1, 60, "a stored event")
    texts = [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
             for port in (aggregator_port, agent_port)]
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    exported = {name for text in texts for name in re.findall(r"^# TYPE (\S+)", text, re.M)}
    documented = re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), re.M)
    assert documented
    assert [name for name in documented if name not in exported] == []
