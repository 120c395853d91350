"""Configuration of the JetStream store and of an agent's list of aggregators."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import aggregator_addresses, load_agent_config, load_aggregator_config
from agent.errors import ConfigError
from agent.keys import write_keypair


def _agent(tmp_path: Path, aggregator: str) -> Path:
    key = tmp_path / "keys" / "node-1.key"
    if not key.exists():
        write_keypair("node-1", tmp_path / "keys")
    path = tmp_path / "agent.toml"
    path.write_text(f'node_id = "node-1"\nkey = "{key}"\nspool_dir = "{tmp_path}/spool"\naggregator = {aggregator}\n'
                    f'[[source]]\ntype = "syslog"\npaths = ["{tmp_path}/*.log"]\n')
    return path


def _aggregator(tmp_path: Path, store: str, top: str = "") -> Path:
    (tmp_path / "trusted").mkdir(exist_ok=True)
    path = tmp_path / "aggregator.toml"
    path.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path}/store"\ntrusted_keys_dir = "{tmp_path}/trusted"\n'
                    f'{top}[store]\n{store}\n')
    return path


def test_an_agent_takes_one_aggregator_or_a_list_in_failover_order(tmp_path: Path) -> None:
    assert aggregator_addresses(load_agent_config(_agent(tmp_path, '"10.0.0.1:7443"'))) == ["10.0.0.1:7443"]
    listed = load_agent_config(_agent(tmp_path, '["10.0.0.1:7443", "10.0.0.2:7443"]'))
    assert aggregator_addresses(listed) == ["10.0.0.1:7443", "10.0.0.2:7443"]


@pytest.mark.parametrize(("value", "expected"), [
    ("[]", "aggregator: give at least one host:port"),
    ('["10.0.0.1:7443", "nowhere"]', "aggregator[1]: 'nowhere' is not host:port"),
    ('["10.0.0.1:7443", 7]', "aggregator[1]: must be a string"),
])
def test_a_bad_aggregator_list_names_the_entry(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_agent_config(_agent(tmp_path, value))


def test_a_jetstream_store_is_configured_with_servers_stream_and_replicas(tmp_path: Path) -> None:
    config = load_aggregator_config(_aggregator(
        tmp_path, 'type = "jetstream"\nservers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]\n'
                  'stream = "AUDIT"\nreplicas = 3'))
    assert (config.store.type, config.store.servers, config.store.stream, config.store.replicas) == (
        "jetstream", ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"], "AUDIT", 3)
    assert load_aggregator_config(_aggregator(tmp_path, "")).store.type == "local"


@pytest.mark.parametrize(("store", "expected"), [
    ('type = "kafka"', "store.type: 'kafka' is not \"local\" or \"jetstream\""),
    ('type = "jetstream"', "store.servers: give the NATS URLs"),
    ('type = "jetstream"\nservers = ["10.0.0.1:4222"]', "store.servers[0]: '10.0.0.1:4222' is not a NATS URL"),
    ('type = "jetstream"\nservers = ["nats://a:4222"]\nstream = "A.B"', "store.stream: 'A.B' may hold only"),
    ('type = "jetstream"\nservers = ["nats://a:4222"]\nreplicas = 7', "store.replicas: must be between 1 and 5"),
    ('servers = ["nats://a:4222"]', "store.servers: only a jetstream store has servers"),
    ('type = "jetstream"\nservers = ["nats://a:4222"]\n[retention]\nmax_bytes = 1000000',
     "retention: a jetstream store is not retired by logseal"),
    ('type = "jetstream"\nservers = ["nats://a:4222"]\n[[forward]]\ntype = "webhook"\nurl = "http://127.0.0.1:1/"',
     "forward: forwarding reads a local store"),
])
def test_a_bad_store_section_is_one_line_naming_the_key(tmp_path: Path, store: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_aggregator_config(_aggregator(tmp_path, store))
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_trust_on_first_use_is_refused_with_a_jetstream_store(tmp_path: Path) -> None:
    """A key pinned on first use lands in one aggregator's trusted_keys_dir; the others would not know it."""
    with pytest.raises(ConfigError) as caught:
        load_aggregator_config(_aggregator(tmp_path, 'type = "jetstream"\nservers = ["nats://a:4222"]',
                                           top='enrollment = "tofu"\n'))
    assert "enrollment: \"tofu\" pins keys in one aggregator's trusted_keys_dir" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("tls", "expected"), [
    ('tls_cert = "{d}/c.pem"\ntls_key = "{d}/k.pem"', "needs the cluster's CA too"),
    ('tls_ca = "{d}/ca.pem"\ntls_cert = "{d}/c.pem"', "give both tls_cert and tls_key"),
    ('tls_ca = "{d}/missing.pem"', "store.tls_ca: file"),
])
def test_nats_tls_settings_are_checked_at_load(tmp_path: Path, tls: str, expected: str) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    store = 'type = "jetstream"\nservers = ["nats://127.0.0.1:4222"]\n' + tls.format(d=tmp_path)
    with pytest.raises(ConfigError, match=expected):
        load_aggregator_config(_aggregator(tmp_path, store))
