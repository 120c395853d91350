"""Retention may delete the segment holding a node's certifying batch: `verify` then takes that epoch
from the index (noted as information) and the later epoch's batches still verify."""

from __future__ import annotations

from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.keychain import KEYS_STREAM, cert_event
from agent.seal import GENESIS, ChainHead, Sealer
from agent.wire import batch_to_bytes
from tests.aggregator.retention_kit import RetentionKit, days_ago, event, iso
from tests.conftest import run_cli


def test_a_certifying_batch_deleted_by_retention_leaves_the_chain_verifiable(tmp_path: Path) -> None:
    kit = RetentionKit(tmp_path)
    kit.send([event(days_ago(200))], node="n1")  # enrols n1 (epoch 0), segment 1
    sealer = Sealer("n1", kit.node_keys["n1"], boot_id=bytes(16), boot_counter=1)
    epoch1 = Ed25519PrivateKey.generate()
    cert = sealer.seal_encoded(GENESIS, sealer.encode(KEYS_STREAM, 1, [cert_event(
        "n1", 1, epoch1.public_key(), {"auth": 1, KEYS_STREAM: 1}, iso(days_ago(199)))]), next_key=epoch1.public_key())
    sealer.switch_key(epoch1, 1)
    head = kit.heads[("n1", "auth")]
    batches = [cert]
    for i in range(2):
        batch = sealer.seal("auth", head, [event(days_ago(1 - i * 0.1))])
        head = ChainHead(batch.header.seq, batch.batch_hash)
        batches.append(batch)
    for batch in batches:  # segments 2 (the certificate), 3 and 4
        assert kit.ingestor.handle(batch_to_bytes(batch), "test", None).status == pb.Ack.STORED
    kit.close()
    deleted = kit.retention_cli()["delete"]
    assert [d["segment"] for d in deleted] == ["00000001.seg", "00000002.seg"]
    code, report, text = kit.verify()
    assert code == 0, text
    assert report["problems"] == []
    assert f"key epoch 1 of n1 taken from the index: its certifying batch {KEYS_STREAM}#1 was deleted by " \
           "retention" in report["info"]
    # An event of epoch 1 is still provable: the bundle carries no broken chain, the store's keys suffice.
    out = tmp_path / "bundle.json"
    proved = run_cli("prove", str(kit.store_dir), "--event-id", "n1:auth:3:0", "--out", str(out))
    assert proved.returncode == 0, proved.stderr
    assert orjson.loads(out.read_bytes())["key_epochs"] == []
    checked = run_cli("verify-bundle", str(out), "--aggregator-pub", str(kit.store_dir / "aggregator.pub"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
