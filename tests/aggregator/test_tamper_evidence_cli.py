"""The tamper-evidence commands as a user runs them: certs, an mTLS aggregator that signs and
witnesses checkpoints, `verify --witness`, `prove` and `verify-bundle`."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson

from agent.aggregator.checkpoints import witness_file_name
from agent.localrun import Workspace, wait_for
from tests.conftest import run_cli

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


def tls_table(ca: Path, cert: Path, key: Path) -> str:
    return f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def make_certs(root: Path, *nodes: str) -> Path:
    """`logseal certs` for a CA, the aggregator (127.0.0.1) and each node; returns the folder."""
    pki = root / "pki"
    assert run_cli("certs", "init", "--out", str(pki / "ca")).returncode == 0
    result = run_cli("certs", "issue", "--ca", str(pki / "ca"), "--aggregator", "--san", "127.0.0.1",
                     "--san", "localhost", "--out", str(pki / "aggregator"))
    assert result.returncode == 0, result.stderr
    for node in nodes:
        result = run_cli("certs", "issue", "--ca", str(pki / "ca"), "--node-id", node, "--out", str(pki / node))
        assert result.returncode == 0, result.stderr
    return pki


def test_certs_cli_writes_private_keys_0600_and_never_overwrites(tmp_path: Path) -> None:
    pki = make_certs(tmp_path, "node-1")
    for key in ("ca/ca-key.pem", "aggregator/aggregator-key.pem", "node-1/node-1-key.pem"):
        assert stat.S_IMODE((pki / key).stat().st_mode) == 0o600
    from agent.certs import node_id_from_cert
    assert node_id_from_cert((pki / "node-1" / "node-1.pem").read_bytes()) == "node-1"
    again = run_cli("certs", "issue", "--ca", str(pki / "ca"), "--node-id", "node-1", "--out", str(pki / "node-1"))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    both = run_cli("certs", "issue", "--ca", str(pki / "ca"), "--node-id", "x", "--aggregator", "--out", str(tmp_path))
    assert both.returncode == 2


def test_over_mtls_the_store_is_sealed_witnessed_verified_and_an_event_proven(workspace: Workspace) -> None:
    pki = make_certs(workspace.root, "node-1")
    witness = workspace.root / "witness"
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 20)
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator(
        extra=f'witness_dir = "{witness}"\norigin = "test.example/logseal"\n'
              + tls_table(pki / "ca" / "ca.pem", pki / "aggregator" / "aggregator.pem",
                          pki / "aggregator" / "aggregator-key.pem"))
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))],
        extra=tls_table(pki / "node-1" / "ca.pem", pki / "node-1" / "node-1.pem", pki / "node-1" / "node-1-key.pem")))
    wait_for(lambda: workspace.stored_events() >= 20, 60, "20 events stored over mTLS")
    assert agent.stop() == 0
    assert aggregator.stop() == 0  # signs the shutdown checkpoint
    store = workspace.store
    assert stat.S_IMODE((store / "aggregator.key").stat().st_mode) == 0o600
    assert (store / "aggregator.pub").exists()
    files = sorted(witness.iterdir())
    assert len(files) == 1 and files[0].name.endswith(".checkpoint")
    assert files[0].read_text().startswith("test.example/logseal\n")

    verified = run_cli("verify", str(store), "--witness", str(witness), "--json")
    assert verified.returncode == 0, verified.stdout
    report = orjson.loads(verified.stdout)
    assert report["checkpoints"] == 1 and report["witness_checkpoints"] == 1 and report["info"] == []
    assert files[0].name == witness_file_name(report["tree_size"])

    first = run_cli("query", str(store), "--json", "--limit", "1").stdout.splitlines()[0]
    event_id = orjson.loads(first)["event"]["id"]
    bundle = workspace.root / "bundle.json"
    proved = run_cli("prove", str(store), "--event-id", event_id, "--out", str(bundle))
    assert proved.returncode == 0, proved.stderr
    pub = workspace.root / "aggregator.pub"
    pub.write_bytes((store / "aggregator.pub").read_bytes())  # the auditor's own copy
    checked = run_cli("verify-bundle", str(bundle), "--aggregator-pub", str(pub))
    assert checked.returncode == 0, checked.stdout
    assert "valid" in checked.stdout

    doctored = orjson.loads(bundle.read_bytes())
    doctored["event"]["user"]["name"] = "mallory"
    bundle.write_bytes(orjson.dumps(doctored))
    refused = run_cli("verify-bundle", str(bundle), "--aggregator-pub", str(pub))
    assert refused.returncode == 1
    assert refused.stdout.strip().splitlines() == [
        f"event {event_id}: the event shown differs from the payload line the node signed"]


def test_prove_names_what_is_missing(tmp_path: Path) -> None:
    from tests.aggregator.storekit import Kit
    kit = Kit(tmp_path / "store")
    kit.add(1)
    kit.close()
    unsealed = run_cli("prove", str(tmp_path / "store"), "--event-id", "node-1:auth:1:0", "--out",
                       str(tmp_path / "b.json"))
    assert unsealed.returncode == 2 and "not yet under a signed checkpoint" in unsealed.stderr
    absent = run_cli("prove", str(tmp_path / "store"), "--event-id", "node-1:auth:9:0", "--out",
                     str(tmp_path / "b.json"))
    assert absent.returncode == 2 and "no batch node-1/auth#9" in absent.stderr
    bad = run_cli("prove", str(tmp_path / "store"), "--event-id", "nonsense", "--out", str(tmp_path / "b.json"))
    assert bad.returncode == 2 and "node:stream:seq:index" in bad.stderr


def test_verify_with_a_missing_aggregator_key_file_is_a_usage_error(tmp_path: Path) -> None:
    from tests.aggregator.storekit import Kit
    kit = Kit(tmp_path / "store")
    kit.add(1)
    kit.checkpoint()
    kit.close()
    result = run_cli("verify", str(tmp_path / "store"), "--aggregator-pub", str(tmp_path / "nope.pub"))
    assert result.returncode == 2 and "nope.pub" in result.stderr
    assert run_cli("verify", str(tmp_path / "store")).returncode == 0
