"""`[[forward]]` tables: read from the aggregator config, bad ones refused at start naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.aggregator.forward.config import ForwardConfig
from agent.cli import main
from agent.config import load_aggregator_config
from agent.errors import ConfigError


def write(tmp_path: Path, forward: str) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    path = tmp_path / "aggregator.toml"
    path.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "store"\ntrusted_keys_dir = "keys"\n{forward}')
    return path


def test_forward_tables_are_read_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    token = tmp_path / "hec.token"
    token.write_text("abc")
    token.chmod(0o600)
    (tmp_path / "ca.pem").write_text("a CA bundle")
    config = load_aggregator_config(write(tmp_path, '''
[[forward]]
type = "splunk_hec"
url = "https://splunk.example:8088/services/collector/event"
token_file = "hec.token"
datasets = ["kubernetes.audit"]
format = "ocsf"

[[forward]]
type = "syslog"
address = "siem.example:6514"
tls_ca = "ca.pem"
name = "qradar"
'''))
    hec, syslog = config.forward
    assert hec.token_file == token and hec.read_token() == "abc" and hec.format == "ocsf"
    assert (hec.batch_size, hec.linger_ms, hec.backoff_initial_ms, hec.backoff_max_ms) == (500, 1000, 500, 60_000)
    assert hec.key.startswith("splunk_hec-") and syslog.key == "qradar"
    assert syslog.use_tls and syslog.tls_ca == tmp_path / "ca.pem"


@pytest.mark.parametrize(("table", "message"), [
    ('type = "kafka"\nurl = "http://x"', "forward.type: 'kafka' is not one of syslog, splunk_hec, elasticsearch"),
    ('type = "webhook"\nurl = "ftp://x"', "forward.url: 'ftp://x' must be an http:// or https:// URL"),
    ('type = "syslog"\naddress = "siem"', "forward.address: 'siem' is not host:port"),
    ('type = "splunk_hec"\nurl = "https://s:8088/services/collector/event"', "forward.token_file: splunk_hec needs"),
    ('type = "webhook"\nurl = "http://x"\nformat = "cef"', "forward.format: 'cef' is not one of ecs, ocsf"),
    ('type = "webhook"\nurl = "http://x"\nbatch_size = 0', "forward.batch_size: must be at least 1"),
    ('type = "webhook"\nurl = "http://x"\nbackoff_initial_ms = 900\nbackoff_max_ms = 10',
     "forward.backoff_max_ms: must be at least backoff_initial_ms"),
    ('type = "webhook"\nurl = "http://x"\nbatchsize = 5', "forward[0].batchsize: unknown key"),
    ('type = "webhook"\nurl = "http://x"\ntoken_env = "LOGSEAL_TEST_UNSET_TOKEN"',
     "forward[0].token_env: environment variable LOGSEAL_TEST_UNSET_TOKEN is unset or empty"),
    ('type = "webhook"\nurl = "http://x"\ntoken_file = "missing.token"', "forward[0].token_file:"),
    ('type = "syslog"\naddress = "siem:6514"\ntls_ca = "nope.pem"', "forward[0].tls_ca: file"),
    ('type = "webhook"\nurl = "http://x"\n[[forward]]\ntype = "webhook"\nurl = "http://x"',
     "forward[1].name: two outputs share the name"),
])
def test_bad_forward_tables_stop_the_aggregator_with_one_line(tmp_path: Path, capsys: Any, table: str,
                                                              message: str) -> None:
    assert main(["aggregator", "--config", str(write(tmp_path, f"[[forward]]\n{table}\n"))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_token_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, capsys: Any) -> None:
    token = tmp_path / "hec.token"
    token.write_text("secret-value")
    token.chmod(0o644)
    path = write(tmp_path, '[[forward]]\ntype = "splunk_hec"\nurl = "http://s/services/collector/event"\n'
                           'token_file = "hec.token"\n')
    assert main(["aggregator", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "forward[0].token_file:" in err and "chmod 600" in err and "secret-value" not in err


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEC_TOKEN", " tok \n")
    config = ForwardConfig(type="splunk_hec", url="http://s:8088/services/collector/event", token_env="HEC_TOKEN")
    assert config.read_token() == "tok"
    with pytest.raises(ConfigError, match="token_env: give token_file or token_env, not both"):
        ForwardConfig(type="webhook", url="http://x", token_env="A", token_file=Path("/x"))
