"""With [tls] on both sides, batches flow over mutually authenticated TLS; a client without a
certificate gets nothing stored."""

from __future__ import annotations

from pathlib import Path

from agent.localrun import Workspace, wait_for
from tests.tls_material import make_tls_material


def tls_table(ca: Path, cert: Path, key: Path) -> str:
    return f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def test_agent_and_aggregator_talk_over_mtls(workspace: Workspace) -> None:
    tls = make_tls_material(workspace.root / "tls")
    log = workspace.root / "auth.log"
    log.write_bytes(b"".join(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n"
                             for _ in range(50)))
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=tls_table(tls["ca"], tls["server"], tls["server-key"]))
    assert aggregator.logged("aggregator serving", tls=True)
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))], extra=tls_table(tls["ca"], tls["client"], tls["client-key"])))
    wait_for(lambda: workspace.stored_events() >= 50, 60, "50 events stored over mTLS")
    assert agent.stop() == 0
    assert aggregator.stop() == 0


def test_agent_without_a_client_certificate_is_refused(workspace: Workspace) -> None:
    tls = make_tls_material(workspace.root / "tls")
    log = workspace.root / "auth.log"
    log.write_bytes(b"Nov 26 10:00:00 h sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2\n")
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=tls_table(tls["ca"], tls["server"], tls["server-key"]))
    plaintext = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))], extra="[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n"))
    wait_for(lambda: len(plaintext.logged("aggregator stream ended; will reconnect")) >= 2, 60,
             "the plaintext agent to be turned away twice")
    assert workspace.stored_events() == 0
    assert plaintext.stop() == 0
    assert aggregator.stop() == 0
