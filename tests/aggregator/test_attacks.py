"""The attack suite: each attack on a real store (filled through the real ingest path) or on a real
mTLS stream, and the exact verify categories or rejection it gives.

The store in each test holds 6 batches of node-1, with signed checkpoints at 2, 4 and 6 (every 2
batches), each also written to a witness folder, as the aggregator does.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import grpc
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import certs
from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.verify import verify_store
from agent.localrun import Workspace
from agent.seal import GENESIS, Sealer
from agent.wire import INGEST_STREAM_METHOD, batch_to_bytes
from tests.aggregator.storekit import Kit, events
from tests.conftest import run_cli

BATCHES = 6


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    witness = tmp_path / "witness"
    witness.mkdir()
    kit = Kit(tmp_path / "store", witness=witness, every=2)
    kit.add(BATCHES)
    return kit


def kinds(kit: Kit, witness: bool = True) -> set[str]:
    report = verify_store(kit.directory, witness_dir=kit.witness if witness else None)
    return {p.kind for p in report.problems}


def problems(kit: Kit, kind: str) -> list[str]:
    report = verify_store(kit.directory, witness_dir=kit.witness)
    return [f"{p.batch} {p.where}" for p in report.problems if p.kind == kind]


def segment_bytes(kit: Kit, name: str = "00000001.seg") -> bytearray:
    return bytearray((kit.directory / "segments" / name).read_bytes())


def write_segment(kit: Kit, data: bytes, name: str = "00000001.seg") -> None:
    (kit.directory / "segments" / name).write_bytes(data)


def test_the_untouched_store_verifies_against_its_witness(kit: Kit) -> None:
    kit.close()
    report = verify_store(kit.directory, witness_dir=kit.witness)
    assert report.ok and report.tree_size == BATCHES and report.checkpoints == 3 and report.witnessed == 3
    assert report.info == []
    result = run_cli("verify", str(kit.directory), "--witness", str(kit.witness))
    assert result.returncode == 0 and "3 checkpoint(s), 3 witnessed: intact" in result.stdout


def test_drop_a_batch(kit: Kit) -> None:
    records = kit.records()
    kit.close()
    _, offset, length = records[2]
    data = segment_bytes(kit)
    write_segment(kit, data[:offset] + data[offset + length:])
    assert problems(kit, "missing") == ["node-1/auth#4 00000001.seg@" + str(offset),  # the chain's gap
                                        "node-1/auth#3 00000001.seg@" + str(offset)]  # the index's orphan
    # the tree recomputed from the segments no longer has the signed roots at 4 and 6 leaves
    assert kinds(kit) == {"missing", "inclusion-failure"}
    assert problems(kit, "inclusion-failure") == [" checkpoint #2 (size 4)", " checkpoint #3 (size 6)"]


def test_reorder_two_batches(kit: Kit) -> None:
    records = kit.records()
    kit.close()
    (_, o1, n1), (_, o2, n2) = records[2], records[3]
    data = segment_bytes(kit)
    write_segment(kit, data[:o1] + data[o2:o2 + n2] + data[o1:o1 + n1] + data[o2 + n2:])
    assert kinds(kit) == {"reordered", "missing", "inclusion-failure"}
    assert problems(kit, "reordered")[0].startswith("node-1/auth#3")
    assert problems(kit, "inclusion-failure") == [" checkpoint #2 (size 4)", " checkpoint #3 (size 6)"]


def test_replay_a_batch(kit: Kit) -> None:
    records = kit.records()
    kit.close()
    _, offset, length = records[1]
    data = segment_bytes(kit)
    write_segment(kit, data + data[offset:offset + length])
    assert kinds(kit) == {"replayed", "inserted"}
    assert problems(kit, "replayed") == ["node-1/auth#2 00000001.seg@" + str(len(data))]


def test_truncate_the_store_tail_with_its_index_is_a_rollback(kit: Kit) -> None:
    records = kit.records()
    kit.store.db.execute("DELETE FROM events WHERE batch_id >= 5")
    kit.store.db.execute("DELETE FROM batches WHERE id >= 5")
    kit.close()
    data = segment_bytes(kit)
    write_segment(kit, data[:records[4][1]])
    assert kinds(kit, witness=False) == {"rollback"}  # the store's own checkpoint of 6
    assert kinds(kit) == {"rollback"}
    assert problems(kit, "rollback") == [" checkpoint #3 (size 6)"]  # the witness signed the same head


def test_truncate_the_tail_and_its_checkpoints_is_caught_only_by_the_witness(kit: Kit) -> None:
    records = kit.records()
    kit.store.db.execute("DELETE FROM events WHERE batch_id >= 5")
    kit.store.db.execute("DELETE FROM batches WHERE id >= 5")
    kit.store.db.execute("DELETE FROM checkpoints WHERE size > 4")
    kit.close()
    data = segment_bytes(kit)
    write_segment(kit, data[:records[4][1]])
    assert kinds(kit, witness=False) == set()  # a careful insider leaves a self-consistent store ...
    assert kinds(kit) == {"rollback"}  # ... but not one the witness agrees with
    result = run_cli("verify", str(kit.directory), "--witness", str(kit.witness))
    assert result.returncode == 1 and "rollback: witness 00000000000000000006.checkpoint" in result.stdout


def test_delete_a_middle_segment(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    kit = Kit(tmp_path / "store", witness=witness, every=2, segment_max_bytes=1 << 10)
    kit.add(BATCHES, per_batch=20)  # ~0.5 KiB each: two batches per segment
    segments = [s for s, _, _ in kit.records()]
    kit.close()
    assert segments == ["00000001.seg"] * 2 + ["00000002.seg"] * 2 + ["00000003.seg"] * 2
    (kit.directory / "segments" / "00000002.seg").unlink()
    assert kinds(kit) == {"missing", "inclusion-failure"}
    assert problems(kit, "missing") == ["node-1/auth#5 00000003.seg@8", "node-1/auth#3 00000002.seg@8",
                                        "node-1/auth#4 00000002.seg@518"]
    assert problems(kit, "inclusion-failure") == [" checkpoint #2 (size 4)", " checkpoint #3 (size 6)"]


def test_insert_a_forged_batch(kit: Kit) -> None:
    kit.close()
    forger = Ed25519PrivateKey.generate()
    forged = Sealer("node-1", forger).seal("auth", GENESIS, events(0, 2))
    raw = batch_to_bytes(forged)
    import struct
    import zlib
    record = b"LSREC" + struct.pack(">I", len(raw)) + raw + struct.pack(">I", zlib.crc32(raw))
    write_segment(kit, segment_bytes(kit) + record)
    assert kinds(kit) == {"inserted", "unknown-key"}
    assert problems(kit, "unknown-key") == [f"node-1/auth#1 00000001.seg@{len(segment_bytes(kit)) - len(record)}"]


def test_modify_one_event_inside_a_segment(kit: Kit) -> None:
    records = kit.records()
    kit.close()
    _, offset, length = records[3]
    data = segment_bytes(kit)
    data[offset + length - 4 - 66 - 20] ^= 0x01  # a byte of the payload (before signature and CRC)
    write_segment(kit, bytes(data))
    assert kinds(kit) == {"modified"}  # the header and so the Merkle leaf are intact: no checkpoint breaks
    assert {p.split()[0] for p in problems(kit, "modified")} == {"node-1/auth#4"}


def test_modify_only_the_index(kit: Kit) -> None:
    kit.close()
    db = sqlite3.connect(kit.directory / "index.db")
    db.execute("UPDATE events SET user = 'someone-else' WHERE batch_id = 2")
    db.commit()
    db.close()
    assert kinds(kit) == {"index-mismatch"}
    assert problems(kit, "index-mismatch")[0].startswith("node-1/auth#2")


def test_roll_the_store_back_to_an_earlier_copy(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    kit = Kit(tmp_path / "store", witness=witness, every=2)
    kit.add(2)
    kit.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(kit.directory, tmp_path / "copy")
    kit.add(4)
    kit.close()
    shutil.rmtree(kit.directory)
    shutil.copytree(tmp_path / "copy", kit.directory)
    assert kinds(kit, witness=False) == set()
    assert kinds(kit) == {"rollback"}
    assert problems(kit, "rollback") == [" witness 00000000000000000004.checkpoint",
                                         " witness 00000000000000000006.checkpoint"]


def test_fork_the_store_after_rolling_it_back(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    kit = Kit(tmp_path / "store", witness=witness, every=2)
    kit.add(2)
    kit.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(kit.directory, tmp_path / "copy")
    kit.add(2)
    kit.close()
    # The insider restarts from the copy and lets other batches in: a second history, also signed.
    fork = Kit(tmp_path / "copy", aggregator_key=kit.aggregator_key, every=2)
    fork.add(2, "node-2")
    fork.close()
    report = verify_store(tmp_path / "copy", witness_dir=witness)
    assert {p.kind for p in report.problems} == {"inconsistent-checkpoints"}
    assert [p.where for p in report.problems] == ["witness 00000000000000000004.checkpoint"]


def test_a_forged_checkpoint_or_another_aggregator_key(kit: Kit, tmp_path: Path) -> None:
    kit.store.db.execute("UPDATE checkpoints SET note = replace(note, ?, ?) WHERE size = 4", ("\n4\n", "\n3\n"))
    kit.close()
    assert kinds(kit) == {"checkpoint-signature"}
    assert problems(kit, "checkpoint-signature") == [" checkpoint #2 (size 4)"]
    (kit.witness / "00000000000000000002.checkpoint").write_text("test.example/logseal\n2\nAAAA\n\n— x y\n")
    assert len(problems(kit, "checkpoint-signature")) == 2
    other = tmp_path / "other.pub"
    from agent.keys import public_pem
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    report = verify_store(kit.directory, aggregator_pub=other)
    assert len([p for p in report.problems if p.kind == "checkpoint-signature"]) == 3
    # The enrollments the real aggregator signed do not verify with another key either.
    assert {p.kind for p in report.problems} == {"checkpoint-signature", "bad-enrollment-record"}


def test_equivocation_is_kept_as_evidence_and_never_overwrites(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(2)
    first = kit.sent[0]
    other = Sealer("node-1", kit.node("node-1")).seal("auth", GENESIS, events(9, 1))  # seq 1 again, other events
    ack = kit.send(other)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "FORKED")
    assert kit.send(other).verdict == "FORKED"  # the same evidence is kept once
    rows = kit.store.db.execute("SELECT node, stream, seq, stored_hash, hash, batch FROM equivocations").fetchall()
    assert [(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), bytes(r[5])) for r in rows] == [
        ("node-1", "auth", 1, first.batch_hash, other.batch_hash, batch_to_bytes(other))]
    assert kit.store.known_hash("node-1", "auth", 1) == first.batch_hash
    kit.checkpoint()
    kit.close()
    report = verify_store(kit.directory)
    assert [(p.kind, p.batch) for p in report.problems] == [("equivocation", "node-1/auth#1")]


# --- identity over real mTLS ------------------------------------------------------------------


def tls_table(ca: Path, cert: Path, key: Path) -> str:
    return f'[tls]\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def write_pair(directory: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def mtls(workspace: Workspace) -> tuple[Workspace, Path, bytes, bytes]:
    """An mTLS aggregator with node-1 and node-2 enrolled; returns (workspace, pki, ca cert, ca key)."""
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = certs.make_ca("attack CA", now)
    pki = workspace.root / "pki"
    pki.mkdir()
    (pki / "ca.pem").write_bytes(ca_cert)
    server = write_pair(pki, "aggregator", certs.issue_server_cert(ca_cert, ca_key, ["127.0.0.1"], now))
    workspace.enrol("node-1")
    workspace.enrol("node-2")
    workspace.start_aggregator(extra=tls_table(pki / "ca.pem", *server))
    return workspace, pki, ca_cert, ca_key


def send_over_tls(workspace: Workspace, ca: bytes, cert: Path, key: Path, raw: bytes) -> list[pb.Ack]:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key.read_bytes(),
                                               certificate_chain=cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{workspace.port}", credentials) as channel:
        stream = channel.stream_stream(INGEST_STREAM_METHOD, request_serializer=None,
                                       response_deserializer=pb.Ack.FromString)
        return list(stream(iter([raw]), timeout=20))


def test_forge_a_batch_under_another_nodes_id_with_a_certificate_for_a_different_node(mtls) -> None:  # type: ignore[no-untyped-def]
    workspace, pki, ca_cert, ca_key = mtls
    now = dt.datetime.now(dt.UTC)
    node2 = write_pair(pki / "node-2", "node-2", certs.issue_node_cert(ca_cert, ca_key, "node-2", now))
    from agent.keys import load_private_key
    stolen = load_private_key(workspace.keys / "node-1.key")  # even node-1's own signing key is not enough
    forged = batch_to_bytes(Sealer("node-1", stolen).seal("auth", GENESIS, events(0, 1)))
    acks = send_over_tls(workspace, ca_cert, *node2, forged)
    assert [(a.status, a.verdict) for a in acks] == [(pb.Ack.REJECTED, "IDENTITY_MISMATCH")]
    assert "node-2" in acks[0].reason
    honest = batch_to_bytes(Sealer("node-2", load_private_key(workspace.keys / "node-2.key"))
                            .seal("auth", GENESIS, events(0, 1)))
    assert [a.status for a in send_over_tls(workspace, ca_cert, *node2, honest)] == [pb.Ack.STORED]
    assert workspace.aggregator is not None and workspace.aggregator.stop() == 0
    assert workspace.aggregator.logged("batch rejected", logger="logseal.security", verdict="IDENTITY_MISMATCH",
                                       node="node-1")
    db = sqlite3.connect(workspace.store / "index.db")
    assert db.execute("SELECT node, verdict FROM rejections").fetchall() == [("node-1", "IDENTITY_MISMATCH")]
    assert db.execute("SELECT node FROM batches").fetchall() == [("node-2",)]
    db.close()


def test_present_a_foreign_ca_certificate(mtls) -> None:  # type: ignore[no-untyped-def]
    workspace, pki, ca_cert, _ = mtls
    now = dt.datetime.now(dt.UTC)
    foreign_cert, foreign_key = certs.make_ca("foreign CA", now)
    node1 = write_pair(pki / "foreign", "node-1", certs.issue_node_cert(foreign_cert, foreign_key, "node-1", now))
    from agent.keys import load_private_key
    batch = batch_to_bytes(Sealer("node-1", load_private_key(workspace.keys / "node-1.key"))
                           .seal("auth", GENESIS, events(0, 1)))
    with pytest.raises(grpc.RpcError) as refused:
        send_over_tls(workspace, ca_cert, *node1, batch)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert workspace.aggregator is not None and workspace.aggregator.stop() == 0
    assert workspace.stored_events() == 0
    report = orjson.loads(run_cli("verify", str(workspace.store), "--json").stdout)
    assert report["ok"] and report["batches"] == 0


def test_with_tls_a_certificate_naming_no_node_sends_nothing(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.ingestor.bind_identity = True
    ack = kit.send(kit.seal("node-1"), cert_node=None)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "IDENTITY_MISMATCH")
    assert "no node (no logseal://node/ URI SAN)" in ack.reason
    assert kit.send(kit.seal("node-2"), cert_node="node-2").status == pb.Ack.STORED
    assert kit.store.tree.size == 1
    kit.close()


def test_sign_with_a_stolen_current_key_for_an_earlier_epoch(tmp_path: Path) -> None:
    """node-1 changes to epoch 1 (its certifying batch names the new key); a thief holding epoch 1's key
    signs a batch claiming epoch 0: rejected KEY_EPOCH_MISUSE; written into the store by hand, verify
    reports exactly `key-epoch-misuse`."""
    from agent.aggregator.index_rows import index_rows
    from agent.keychain import KEYS_STREAM, cert_event
    from agent.seal import ChainHead, open_payload

    kit = Kit(tmp_path / "store")
    sealer = Sealer("node-1", kit.node("node-1"), boot_id=bytes(16), boot_counter=1)
    first = sealer.seal("auth", GENESIS, events(0, 2))
    epoch1 = Ed25519PrivateKey.generate()
    event = cert_event("node-1", 1, epoch1.public_key(), {"auth": 1, KEYS_STREAM: 1}, "2026-11-26T10:00:00.000000Z")
    cert = sealer.seal_encoded(GENESIS, sealer.encode(KEYS_STREAM, 1, [event]), next_key=epoch1.public_key())
    sealer.switch_key(epoch1, 1)
    second = sealer.seal("auth", ChainHead(1, first.batch_hash), events(1, 2))
    assert [kit.send(b).status for b in (first, cert, second)] == [pb.Ack.STORED] * 3
    thief = Sealer("node-1", epoch1, key_epoch=0, boot_id=bytes(16), boot_counter=1)
    forged = thief.seal("auth", ChainHead(2, second.batch_hash), events(2, 2))
    ack = kit.send(forged)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "KEY_EPOCH_MISUSE")
    assert "claims epoch 0" in ack.reason
    body = open_payload(forged).body
    assert body is not None
    kit.store.append(batch_to_bytes(forged), forged, index_rows(body))  # past the aggregator, by hand
    segment, offset, _ = kit.records()[-1]
    kit.close()
    assert problems(kit, "key-epoch-misuse") == [f"node-1/auth#3 {segment}@{offset}"]
    assert kinds(kit, witness=False) == {"key-epoch-misuse"}


def test_a_node_removed_from_the_trusted_keys_is_cut_off_whatever_its_epoch(tmp_path: Path) -> None:
    from agent.seal import ChainHead, keyring_from

    kit = Kit(tmp_path / "store")
    sealer = Sealer("node-1", kit.node("node-1"), boot_id=bytes(16), boot_counter=1)
    first = sealer.seal("auth", GENESIS, events(0, 2))
    assert kit.send(first).status == pb.Ack.STORED
    second = sealer.seal("auth", ChainHead(1, first.batch_hash), events(1, 2))
    kit.ingestor.keyring = keyring_from({})  # what SIGHUP does once node-1.pub is removed
    ack = kit.send(second)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "UNKNOWN_NODE") and "no longer enrolled" in ack.reason
    kit.ingestor.keyring = keyring_from({"node-1": Ed25519PrivateKey.generate().public_key()})  # another key
    ack = kit.send(second)
    assert (ack.status, ack.verdict) == (pb.Ack.REJECTED, "UNKNOWN_KEY") and "new node id" in ack.reason
    kit.close()
