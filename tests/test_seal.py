"""Seal and open: every kind of damage to a batch or its chain gets its own verdict."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.seal import (
    GENESIS,
    ChainHead,
    ChainTracker,
    SealedBatch,
    Sealer,
    Verdict,
    batch_hash,
    check_link,
    decode_events,
    keyring_from,
    open_payload,
    verify_signature,
)

NODE = "node-a"


def make_events(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"@timestamp": f"2026-11-26T10:00:{(start + i) % 60:02d}.000000Z",
         "event": {"action": "create", "dataset": "kubernetes.audit"}, "message": f"line {start + i}"}
        for i in range(n)
    ]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def sealer(key: Ed25519PrivateKey) -> Sealer:
    return Sealer(NODE, key)


@pytest.fixture
def keyring(key: Ed25519PrivateKey) -> dict[str, dict[str, object]]:
    return keyring_from({NODE: key.public_key()})


def chain(sealer: Sealer, count: int) -> list[SealedBatch]:
    head, out = GENESIS, []
    for i in range(count):
        batch = sealer.seal("k8s", head, make_events(3, i * 3))
        out.append(batch)
        head = ChainHead(batch.header.seq, batch.batch_hash)
    return out


def with_payload(batch: SealedBatch, payload: bytes) -> SealedBatch:
    return dataclasses.replace(batch, payload=payload)


def test_a_sealed_batch_opens_to_its_events_with_ids(sealer: Sealer, keyring) -> None:
    batch = sealer.seal("k8s", GENESIS, make_events(5))
    assert verify_signature(batch, keyring).ok
    opened = open_payload(batch)
    assert opened.finding.verdict is Verdict.OK
    assert opened.body is not None
    events = decode_events(opened.body)
    assert [e["message"] for e in events] == [f"line {i}" for i in range(5)]
    assert [e["event"]["id"] for e in events] == [f"{NODE}:k8s:1:{i}" for i in range(5)]
    h = batch.header
    assert (h.seq, h.prev_hash, h.event_count) == (1, bytes(32), 5)
    assert h.first_event_time_ns < h.last_event_time_ns
    assert h.payload_sha256 == hashlib.sha256(batch.payload).digest()


def test_flipped_payload_byte_is_a_digest_mismatch(sealer: Sealer, keyring) -> None:
    batch = sealer.seal("k8s", GENESIS, make_events(50))
    flipped = bytearray(batch.payload)
    flipped[len(flipped) // 2] ^= 0x01
    damaged = with_payload(batch, bytes(flipped))
    assert verify_signature(damaged, keyring).ok  # the header is untouched...
    assert open_payload(damaged).finding.verdict is Verdict.DIGEST_MISMATCH  # ...but it binds the payload


def test_truncated_payload_has_its_own_verdict(sealer: Sealer) -> None:
    batch = sealer.seal("k8s", GENESIS, make_events(200))
    finding = open_payload(with_payload(batch, batch.payload[: len(batch.payload) // 2])).finding
    assert finding.verdict is Verdict.TRUNCATED_PAYLOAD


def test_batch_signed_by_another_key_is_a_bad_signature(keyring) -> None:
    impostor = Sealer(NODE, Ed25519PrivateKey.generate())
    forged = impostor.seal("k8s", GENESIS, make_events(2))
    # Same node name, other key: the key id differs, so the enrolled key is not even found...
    assert verify_signature(forged, keyring).verdict is Verdict.UNKNOWN_KEY
    # ...and claiming the enrolled key id does not help: the signature fails.
    real_key_id = next(iter(keyring[NODE]))
    header = dataclasses.replace(forged.header, key_id=real_key_id)
    digest = batch_hash(header)
    claimed = SealedBatch(header, forged.payload, forged.signature, digest)
    assert verify_signature(claimed, keyring).verdict is Verdict.BAD_SIGNATURE


def test_changed_header_field_breaks_the_signature(sealer: Sealer, keyring) -> None:
    batch = sealer.seal("k8s", GENESIS, make_events(2))
    header = dataclasses.replace(batch.header, event_count=1)
    assert verify_signature(SealedBatch(header, batch.payload, batch.signature, batch_hash(header)),
                            keyring).verdict is Verdict.BAD_SIGNATURE


def test_unknown_node_is_refused(keyring) -> None:
    stranger = Sealer("node-z", Ed25519PrivateKey.generate()).seal("k8s", GENESIS, make_events(1))
    assert verify_signature(stranger, keyring).verdict is Verdict.UNKNOWN_NODE


def test_zstd_bomb_is_refused_without_inflating_it(key: Ed25519PrivateKey, keyring) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\n" * (256 << 20))
    assert len(bomb) < 64 << 10
    honest = Sealer(NODE, key).seal("k8s", GENESIS, make_events(1))
    header = dataclasses.replace(honest.header, payload_sha256=hashlib.sha256(bomb).digest(),
                                 uncompressed_length=1000)
    digest = batch_hash(header)
    signed_bomb = SealedBatch(header, bomb, key.sign(digest), digest)
    assert verify_signature(signed_bomb, keyring).ok
    assert open_payload(signed_bomb).finding.verdict is Verdict.DECOMPRESSION_LIMIT

    huge = dataclasses.replace(header, uncompressed_length=1 << 40)
    digest = batch_hash(huge)
    declared = SealedBatch(huge, bomb, key.sign(digest), digest)
    assert open_payload(declared).finding.verdict is Verdict.DECOMPRESSION_LIMIT


def test_next_batch_links_to_the_head(sealer: Sealer) -> None:
    first, second = chain(sealer, 2)
    head = ChainHead(1, first.batch_hash)
    assert check_link(head, second.header, second.batch_hash, None).verdict is Verdict.OK


def test_skipped_seq_is_a_gap(sealer: Sealer) -> None:
    first, _, third = chain(sealer, 3)
    head = ChainHead(1, first.batch_hash)
    assert check_link(head, third.header, third.batch_hash, None).verdict is Verdict.SEQ_GAP


def test_batch_with_wrong_prev_hash_breaks_the_chain(sealer: Sealer) -> None:
    first, second = chain(sealer, 2)
    assert check_link(ChainHead(1, b"\x01" * 32), second.header, second.batch_hash, None).verdict \
        is Verdict.CHAIN_BROKEN


def test_replayed_batch_is_recognised(sealer: Sealer) -> None:
    batches = chain(sealer, 3)
    tracker = ChainTracker()
    verdicts = [tracker.observe(b.header, b.batch_hash).verdict for b in [*batches, batches[1]]]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.OK, Verdict.REPLAYED]


def test_reordered_batches_are_recognised(sealer: Sealer) -> None:
    first, second, third = chain(sealer, 3)
    tracker = ChainTracker()
    verdicts = [tracker.observe(b.header, b.batch_hash).verdict for b in (first, third, second)]
    assert verdicts == [Verdict.OK, Verdict.SEQ_GAP, Verdict.REORDERED]


def test_second_batch_for_a_stored_seq_is_a_fork(sealer: Sealer) -> None:
    first, second = chain(sealer, 2)
    other = sealer.seal("k8s", ChainHead(1, first.batch_hash), make_events(1, 99))
    tracker = ChainTracker()
    verdicts = [tracker.observe(b.header, b.batch_hash).verdict for b in (first, second, other)]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.FORKED]


def test_chains_are_per_stream(sealer: Sealer) -> None:
    a = sealer.seal("k8s", GENESIS, make_events(1))
    b = sealer.seal("auditd", GENESIS, make_events(1))
    assert a.header.seq == b.header.seq == 1
    assert a.batch_hash != b.batch_hash  # the stream id is part of the hashed header


def test_the_pure_core_does_no_io() -> None:
    banned = {"os", "socket", "asyncio", "grpc", "subprocess", "pathlib", "io", "time"}
    for module in ("seal.py", "normalize/common.py", "aggregator/index_rows.py"):
        tree = ast.parse((Path(__file__).parents[1] / "agent" / module).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & banned, f"{module} imports {imported & banned}"
