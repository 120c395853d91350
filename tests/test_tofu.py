"""Trust on first use over real mTLS: the first key a node presents with a valid client certificate is
pinned (into trusted_keys_dir and the store's node_keys); a different epoch-0 key later is UNKNOWN_KEY.
Without [tls], `enrollment = "tofu"` is refused at config load."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.config import load_aggregator_config
from agent.errors import ConfigError
from agent.keys import load_private_key, load_public_key, write_keypair
from agent.localrun import Workspace, wait_for
from agent.seal import GENESIS, Sealer, key_id_of
from agent.wire import INGEST_STREAM_METHOD, batch_to_bytes
from tests.tls_material import make_tls_material

LINE = b"Nov 26 10:00:00 h sshd[1]: Accepted password for alice from 10.0.0.1 port 1 ssh2\n"


def tls_table(ca: Path, cert: Path, key: Path) -> str:
    return f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def test_the_first_key_with_a_valid_certificate_is_pinned_and_a_second_is_refused(workspace: Workspace) -> None:
    tls = make_tls_material(workspace.root / "tls", node_id="node-1")
    key_path, _ = write_keypair("node-1", workspace.keys)  # not copied into trusted_keys_dir
    node_key = load_private_key(key_path).public_key()
    log = workspace.root / "auth.log"
    log.write_bytes(LINE * 20)
    aggregator = workspace.start_aggregator(
        extra='enrollment = "tofu"\n' + tls_table(tls["ca"], tls["server"], tls["server-key"]))
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("syslog", str(log))], extra=tls_table(tls["ca"], tls["client"], tls["client-key"])))
    wait_for(lambda: workspace.stored_events() >= 20, 60, "20 events stored after trust on first use")
    assert agent.stop() == 0
    pinned = workspace.trusted / "node-1.pub"
    assert key_id_of(load_public_key(pinned)) == key_id_of(node_key)
    assert stat.S_IMODE(pinned.stat().st_mode) == 0o644
    assert aggregator.logged("node enrolled", node="node-1", epoch=0, how="tofu", key_id=key_id_of(node_key))
    conn = sqlite3.connect(f"file:{workspace.store / 'index.db'}?mode=ro", uri=True)
    assert conn.execute("SELECT epoch, key_id, how FROM node_keys").fetchall() == [(0, key_id_of(node_key), "tofu")]
    conn.close()
    # Another key for node-1, even with node-1's valid certificate and presented the same way, is not trusted.
    other = Ed25519PrivateKey.generate()
    raw = batch_to_bytes(Sealer("node-1", other, boot_id=bytes(16), boot_counter=9).seal("syslog", GENESIS, []))
    credentials = grpc.ssl_channel_credentials(tls["ca"].read_bytes(), tls["client-key"].read_bytes(),
                                               tls["client"].read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{workspace.port}", credentials) as channel:
        stream = channel.stream_stream(INGEST_STREAM_METHOD, request_serializer=None,
                                       response_deserializer=pb.Ack.FromString)
        (ack,) = list(stream(iter([raw]), timeout=20, metadata=(("logseal-enrolled-key", other.public_key()
                                                                   .public_bytes_raw().hex()),)))
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "UNKNOWN_KEY")
    assert key_id_of(load_public_key(pinned)) == key_id_of(node_key)  # the pin stays
    assert aggregator.stop() == 0


def test_tofu_without_tls_is_refused_at_config_load(tmp_path: Path) -> None:
    (tmp_path / "trusted").mkdir()
    config = tmp_path / "aggregator.toml"
    config.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path / "store"}"\n'
                      f'trusted_keys_dir = "{tmp_path / "trusted"}"\nenrollment = "tofu"\n')
    with pytest.raises(ConfigError, match=r"enrollment: \"tofu\" needs \[tls\]"):
        load_aggregator_config(config)
    config.write_text(config.read_text().replace('"tofu"', '"maybe"'))
    with pytest.raises(ConfigError, match="enrollment: 'maybe' is not"):
        load_aggregator_config(config)
