"""Certificates reload without a restart: after SIGHUP a new connection to the aggregator sees its new
server certificate, and an agent presents its new client certificate on a new channel."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import ssl
from pathlib import Path

from cryptography import x509

from agent import certs
from agent.localrun import Workspace, wait_for

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


def tls_table(ca: Path, cert: Path, key: Path) -> str:
    return f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def write_pair(directory: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    key.chmod(0o600)
    return cert, key


def serial_of(pem: Path) -> int:
    return x509.load_pem_x509_certificate(pem.read_bytes()).serial_number


def served_serial(port: int, ca: Path, client: tuple[Path, Path]) -> int:
    """The serial of the certificate the aggregator presents to a new TLS connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client[0]), str(client[1]))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def pki(workspace: Workspace) -> tuple[Path, bytes, bytes]:
    ca_cert, ca_key = certs.make_ca("reload CA", dt.datetime.now(dt.UTC))
    directory = workspace.root / "pki"
    directory.mkdir()
    (directory / "ca.pem").write_bytes(ca_cert)
    return directory, ca_cert, ca_key


def test_sighup_makes_new_connections_see_the_new_server_certificate(workspace: Workspace) -> None:
    directory, ca_cert, ca_key = pki(workspace)
    now = dt.datetime.now(dt.UTC)
    server = write_pair(directory, "aggregator", certs.issue_server_cert(ca_cert, ca_key, ["127.0.0.1"], now))
    client = write_pair(directory, "node-1", certs.issue_node_cert(ca_cert, ca_key, "node-1", now))
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(extra=tls_table(directory / "ca.pem", *server))
    old = serial_of(server[0])
    assert served_serial(workspace.port, directory / "ca.pem", client) == old
    write_pair(directory, "aggregator", certs.issue_server_cert(ca_cert, ca_key, ["127.0.0.1"], now))
    new = serial_of(server[0])
    assert new != old
    assert served_serial(workspace.port, directory / "ca.pem", client) == old  # nothing changes before SIGHUP
    assert aggregator.process is not None
    aggregator.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(aggregator.logged("TLS certificates reloaded; new connections use them")), 30,
             "the aggregator to reload")
    assert served_serial(workspace.port, directory / "ca.pem", client) == new
    # A file that is not a certificate is refused; the reloaded certificate stays in use.
    server[0].write_text("not a certificate")
    aggregator.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(aggregator.logged("TLS certificate reload refused; the loaded certificates stay")), 30,
             "the bad reload to be refused")
    assert served_serial(workspace.port, directory / "ca.pem", client) == new
    assert aggregator.stop() == 0


def test_sighup_makes_the_agent_present_its_new_client_certificate(workspace: Workspace) -> None:
    directory, ca_cert, ca_key = pki(workspace)
    now = dt.datetime.now(dt.UTC)
    server = write_pair(directory, "aggregator", certs.issue_server_cert(ca_cert, ca_key, ["127.0.0.1"], now))
    client = write_pair(directory, "agent", certs.issue_node_cert(ca_cert, ca_key, "node-9", now))  # wrong node
    workspace.enrol("node-1")
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 10)
    aggregator = workspace.start_aggregator(extra=tls_table(directory / "ca.pem", *server))
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))],
        extra="[ship]\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n" + tls_table(directory / "ca.pem", *client)))
    rejected = "aggregator rejected a batch; it stays spooled and will be resent"
    wait_for(lambda: bool(agent.logged(rejected, verdict="IDENTITY_MISMATCH")), 60,
             "the agent's batches refused under node-9's cert")
    assert workspace.stored_events() == 0
    write_pair(directory, "agent", certs.issue_node_cert(ca_cert, ca_key, "node-1", now))  # the renewed cert
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    wait_for(lambda: workspace.stored_events() >= 10, 60, "the events stored under the new certificate")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
