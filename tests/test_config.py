"""Bad configuration stops the agent or aggregator at start with one line naming the key and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.keys import write_keypair


@pytest.fixture
def node_key(tmp_path: Path) -> Path:
    key, _ = write_keypair("node-1", tmp_path / "keys")
    return key


def agent_toml(tmp_path: Path, key: Path, body: str = "", source: str | None = None) -> Path:
    source = source if source is not None else f'[[source]]\ntype = "syslog"\npaths = ["{tmp_path}/*.log"]\n'
    path = tmp_path / "agent.toml"
    path.write_text(f'node_id = "node-1"\nkey = "{key}"\nspool_dir = "{tmp_path}/spool"\n'
                    f'aggregator = "127.0.0.1:7443"\n{body}\n{source}')
    return path


def run_agent_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["agent", "--config", str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("body", "source", "expected"),
    [
        ("colour = 3", None, "colour: unknown key"),
        ("[batch]\nmax_event = 10", None, "batch.max_event: unknown key"),
        ("[batch]\nmax_events = 0", None, "batch.max_events: must be between 1 and 100000"),
        ("[batch]\nlinger_ms = \"fast\"", None, "batch.linger_ms: must be an integer"),
        ("", '[[source]]\ntype = "nginx"\npaths = ["/x"]\n', "source[0].type: 'nginx' is not one of"),
        ("", '[[source]]\ntype = "syslog"\npaths = ["/var/log/[abc"]\n', "has an unclosed '['"),
        ("", '[[source]]\ntype = "syslog"\npaths = [""]\n', "source[0].paths[0]: empty glob"),
        ("", '[[source]]\ntype = "syslog"\npaths = ["/var/log/"]\n', "names a directory"),
        ("", "", "source: at least one [[source]] table is required"),
        ("", '[[source]]\ntype = "syslog"\n', "source[0].paths: give at least one glob"),
        ("[tls]\nca = \"/nonexistent/ca.pem\"", None, "tls.cert: is required when [tls] is present"),
        ("[tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"/x\"\nkey = \"/y\"", None,
         "tls.ca: file /nonexistent/ca.pem does not exist"),
    ],
)
def test_bad_agent_config_is_one_line_naming_the_key(tmp_path: Path, node_key: Path, capsys, body: str,
                                                     source: str | None, expected: str) -> None:
    code, err = run_agent_config(agent_toml(tmp_path, node_key, body, source), capsys)
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1, err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    code, err = run_agent_config(tmp_path / "nope.toml", capsys)
    assert code == 2 and "config file not found" in err


def test_invalid_toml(tmp_path: Path, capsys) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("node_id = \n")
    code, err = run_agent_config(path, capsys)
    assert code == 2 and "not valid TOML" in err


def test_missing_key_file_says_how_to_create_it(tmp_path: Path, capsys) -> None:
    code, err = run_agent_config(agent_toml(tmp_path, tmp_path / "keys" / "absent.key"), capsys)
    assert code == 2
    assert "key:" in err and "logseal keygen --node-id node-1" in err


def test_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, node_key: Path, capsys) -> None:
    os.chmod(node_key, 0o644)
    code, err = run_agent_config(agent_toml(tmp_path, node_key), capsys)
    assert code == 2
    assert f"has mode 0644; it must be private: chmod 600 {node_key}" in err


def test_key_that_is_not_a_key_is_refused(tmp_path: Path, node_key: Path, capsys) -> None:
    node_key.write_bytes(b"not a pem file")
    code, err = run_agent_config(agent_toml(tmp_path, node_key), capsys)
    assert code == 2 and "is not a PEM Ed25519 private key" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key_is_refused(tmp_path: Path, node_key: Path, capsys) -> None:
    os.chmod(node_key, 0o000)
    code, err = run_agent_config(agent_toml(tmp_path, node_key), capsys)
    assert code == 2 and "cannot be read" in err


def test_bad_aggregator_config(tmp_path: Path, capsys) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text(f'listen = "7443"\nstore_dir = "{tmp_path}/store"\ntrusted_keys_dir = "{tmp_path}"\n')
    assert main(["aggregator", "--config", str(path)]) == 2
    assert "listen: '7443' is not host:port" in capsys.readouterr().err
    path.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path}/store"\ntrusted_keys_dir = "{tmp_path}/no"\n')
    assert main(["aggregator", "--config", str(path)]) == 2
    assert "trusted_keys_dir:" in capsys.readouterr().err


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path: Path, node_key: Path) -> None:
    from agent.config import load_agent_config

    path = tmp_path / "agent.toml"
    path.write_text(f'node_id = "node-1"\nkey = "keys/{node_key.name}"\nspool_dir = "spool"\n'
                    'aggregator = "127.0.0.1:1"\n[[source]]\ntype = "auditd"\npaths = ["/var/log/audit/audit.log"]\n')
    config = load_agent_config(path)
    assert config.key == tmp_path / "keys" / node_key.name
    assert config.spool_dir == tmp_path / "spool"
    assert config.batch.max_events == 1000
