"""Enrolling a node's key is a sealed record: the aggregator signs it, the node's `node enrolled` line is
logged, and `logseal verify` catches an enrollment changed in the index afterwards."""

from __future__ import annotations

import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.aggregator.enrollment import attest, check_attestation
from agent.checkpoint import CheckpointError
from agent.localrun import Workspace, wait_for
from agent.seal import raw_public
from tests.conftest import run_cli

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


def test_an_attestation_holds_for_its_enrollment_only() -> None:
    aggregator = Ed25519PrivateKey.generate()
    node_key = raw_public(Ed25519PrivateKey.generate().public_key())
    signature = attest("example.com/logseal", aggregator, "node-1", node_key, "pinned", "trusted_keys_dir")
    check_attestation("example.com/logseal", aggregator.public_key(), "node-1", node_key, "pinned",
                      "trusted_keys_dir", signature)
    other_key = raw_public(Ed25519PrivateKey.generate().public_key())
    for changed in [("node-2", node_key, "pinned"), ("node-1", other_key, "pinned"), ("node-1", node_key, "tofu")]:
        with pytest.raises(CheckpointError):
            check_attestation("example.com/logseal", aggregator.public_key(), changed[0], changed[1], changed[2],
                              "trusted_keys_dir", signature)
    with pytest.raises(CheckpointError):
        check_attestation("example.com/logseal", Ed25519PrivateKey.generate().public_key(), "node-1", node_key,
                          "pinned", "trusted_keys_dir", signature)


def enrolled_store(workspace: Workspace) -> None:
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 5)
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    agent = workspace.start_agent(workspace.agent_config("node-1", [("syslog", str(log))]))
    wait_for(lambda: bool(aggregator.logged("node enrolled", node="node-1", attested=True)), 30,
             "the aggregator to log the attested enrollment of node-1")
    assert agent.stop() == 0
    assert aggregator.stop() == 0


def test_a_real_enrollment_is_signed_logged_and_verifies(workspace: Workspace) -> None:
    enrolled_store(workspace)
    db = sqlite3.connect(workspace.store / "index.db")
    (attestation,) = db.execute("SELECT attestation FROM enrollments WHERE node='node-1'").fetchone()
    db.close()
    assert attestation.startswith("\u2014 ")  # a signed-note signature line
    result = run_cli("verify", str(workspace.store))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("column, value", [("how", "tofu"), ("detail", "added by hand"),
                                           ("public_key", bytes(32))])
def test_an_enrollment_changed_in_the_index_is_caught(workspace: Workspace, column: str, value: object) -> None:
    enrolled_store(workspace)
    db = sqlite3.connect(workspace.store / "index.db")
    db.execute(f"UPDATE node_keys SET {column} = ? WHERE node='node-1' AND epoch=0", (value,))
    db.commit()
    db.close()
    result = run_cli("verify", str(workspace.store))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad-enrollment-record" in result.stdout and "enrollment of node-1" in result.stdout
