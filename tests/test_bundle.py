"""Evidence bundles: a real sealed batch in a real Merkle log under a signed checkpoint, checked
offline with public keys only; each kind of tampering is named."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import merkle
from agent.bundle import BundleError, build_bundle, verify_bundle
from agent.checkpoint import Checkpoint, sign_checkpoint
from agent.seal import GENESIS, ChainHead, SealedBatch, Sealer, open_payload
from agent.wire import batch_to_bytes

NODE = "worker-1"
ORIGIN = "logseal.example/aggregator"
# A Kubernetes audit record kept verbatim (orjson.Fragment), with spacing no serializer would produce.
VERBATIM_AUDIT = b'{"kind":"Event",  "verb" : "delete","objectRef":{"resource":"secrets"}}'


def events(batch_no: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"@timestamp": f"2026-11-26T10:00:0{i}.000000Z", "event": {"action": "get", "dataset": "system.auth"},
         "message": f"batch {batch_no} line {i}", "user": {"name": "alice"}}
        for i in range(3)
    ]
    out[1]["kubernetes"] = {"audit": orjson.Fragment(VERBATIM_AUDIT)}
    return out


class Log:
    """An aggregator in miniature: stored batches, their Merkle leaves, a signed checkpoint."""

    def __init__(self, node_key: Ed25519PrivateKey, aggregator_key: Ed25519PrivateKey, batches: int = 5) -> None:
        sealer = Sealer(NODE, node_key)
        head = GENESIS
        self.batches: list[SealedBatch] = []
        for i in range(batches):
            batch = sealer.seal("auth", head, events(i))
            head = ChainHead(batch.header.seq, batch.batch_hash)
            self.batches.append(batch)
        self.leaves = [merkle.leaf_hash(b.batch_hash) for b in self.batches]
        cp = Checkpoint(ORIGIN, len(self.leaves), merkle.root(self.leaves))
        self.checkpoint = sign_checkpoint(cp, ORIGIN, aggregator_key)
        self.node_pem = node_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)

    def bundle(self, batch_index: int, event_index: int) -> dict[str, Any]:
        batch = self.batches[batch_index]
        body = orjson.loads(b"[" + b",".join(_lines(batch)) + b"]")
        size = len(self.leaves)
        return build_bundle(body[event_index], batch_to_bytes(batch), [self.node_pem], batch_index, size,
                            merkle.inclusion_proof(self.leaves, batch_index, size), self.checkpoint)


def _lines(batch: SealedBatch) -> list[bytes]:
    body = open_payload(batch).body
    assert body is not None
    return body.split(b"\n")


@pytest.fixture
def node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def aggregator_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log(node_key: Ed25519PrivateKey, aggregator_key: Ed25519PrivateKey) -> Log:
    return Log(node_key, aggregator_key)


def test_a_bundle_verifies_after_a_trip_through_json(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(3, 0)
    assert bundle["event_id"] == f"{NODE}:auth:4:0"
    assert bundle["leaf_index"] == 3 and bundle["tree_size"] == 5
    assert verify_bundle(json.loads(json.dumps(bundle)), aggregator_key.public_key()) == []


def test_the_event_is_carried_byte_for_byte_even_when_re_serializing_would_change_it(
        log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(2, 1)
    assert VERBATIM_AUDIT.decode() in bundle["event_line"]
    assert orjson.dumps(bundle["event"]) != bundle["event_line"].encode()
    assert verify_bundle(bundle, aggregator_key.public_key()) == []


def test_every_leaf_of_a_log_of_any_size_can_be_proven(node_key: Ed25519PrivateKey,
                                                      aggregator_key: Ed25519PrivateKey) -> None:
    for size in (1, 2, 3, 7):
        small = Log(node_key, aggregator_key, batches=size)
        for i in range(size):
            assert verify_bundle(small.bundle(i, 2), aggregator_key.public_key()) == []


def test_build_accepts_the_event_as_its_payload_line(log: Log) -> None:
    line = _lines(log.batches[0])[2]
    bundle = build_bundle(line, batch_to_bytes(log.batches[0]), [log.node_pem], 0, 5,
                          merkle.inclusion_proof(log.leaves, 0, 5), log.checkpoint)
    assert bundle["event_line"].encode() == line


def test_build_refuses_an_event_that_is_not_in_the_batch(log: Log) -> None:
    stranger = {"event": {"id": f"{NODE}:auth:9:0"}}
    with pytest.raises(BundleError, match="not in the batch"):
        build_bundle(stranger, batch_to_bytes(log.batches[0]), [log.node_pem], 0, 5, [], log.checkpoint)
    with pytest.raises(BundleError, match=r"event\.id"):
        build_bundle({"message": "x"}, batch_to_bytes(log.batches[0]), [log.node_pem], 0, 5, [], log.checkpoint)


def one_problem(bundle: dict[str, Any], aggregator_key: Ed25519PrivateKey, *words: str) -> None:
    problems = verify_bundle(bundle, aggregator_key.public_key())
    assert len(problems) == 1, problems
    for word in words:
        assert word in problems[0], problems


def test_an_edited_event_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(1, 0)
    bundle["event"]["user"]["name"] = "mallory"
    one_problem(bundle, aggregator_key, "event shown differs")


def test_an_edited_event_line_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(1, 0)
    bundle["event_line"] = bundle["event_line"].replace("alice", "mallory")
    bundle["event"] = json.loads(bundle["event_line"])
    problems = verify_bundle(bundle, aggregator_key.public_key())
    assert len(problems) == 2 and all("differs from the payload line" in p for p in problems), problems


def test_an_event_from_elsewhere_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(1, 0)
    bundle["event_id"] = f"{NODE}:auth:1:0"
    one_problem(bundle, aggregator_key, "not in the payload")


def test_a_changed_payload_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(1, 0)
    batch = log.batches[1]
    forged = SealedBatch(batch.header, batch.payload[:-1] + bytes([batch.payload[-1] ^ 1]), batch.signature,
                         batch.batch_hash)
    bundle["batch"] = base64.b64encode(batch_to_bytes(forged)).decode()
    one_problem(bundle, aggregator_key, "payload", "DIGEST_MISMATCH")


def test_another_batch_in_place_of_the_proven_one_fails_inclusion(log: Log,
                                                                  aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(1, 0)
    other = log.bundle(2, 0)
    for field in ("batch", "event_id", "event", "event_line"):
        bundle[field] = other[field]
    one_problem(bundle, aggregator_key, "inclusion", "not at leaf 1")


def test_a_forged_batch_under_another_key_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    thief = Sealer(NODE, Ed25519PrivateKey.generate())
    forged = thief.seal("auth", GENESIS, events(0))
    bundle = log.bundle(0, 0)
    evidence = build_bundle(_lines(forged)[0], batch_to_bytes(forged), [log.node_pem], 0, 5,
                            [base64.b64decode(h) for h in bundle["inclusion_proof"]], log.checkpoint)
    problems = verify_bundle(evidence, aggregator_key.public_key())
    assert any("UNKNOWN_KEY" in p for p in problems) and any("inclusion" in p for p in problems), problems


def test_independently_held_node_keys_override_the_bundled_ones(log: Log, node_key: Ed25519PrivateKey,
                                                                aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(0, 0)
    assert verify_bundle(bundle, aggregator_key.public_key(), trusted_node_keys=[node_key.public_key()]) == []
    problems = verify_bundle(bundle, aggregator_key.public_key(),
                             trusted_node_keys=[Ed25519PrivateKey.generate().public_key()])
    assert len(problems) == 1 and "UNKNOWN_KEY" in problems[0]


def test_a_checkpoint_not_signed_by_the_aggregator_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(0, 0)
    problems = verify_bundle(bundle, Ed25519PrivateKey.generate().public_key())
    assert len(problems) == 1 and problems[0].startswith("checkpoint: MISSING_SIGNATURE"), problems
    bundle["checkpoint"] = bundle["checkpoint"].replace("\n5\n", "\n6\n", 1)
    one_problem(bundle, aggregator_key, "checkpoint", "BAD_SIGNATURE")


def test_a_wrong_leaf_index_size_or_proof_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(3, 0)
    moved = copy.deepcopy(bundle)
    moved["leaf_index"] = 2
    one_problem(moved, aggregator_key, "inclusion", "not at leaf 2")
    resized = copy.deepcopy(bundle)
    resized["tree_size"] = 4
    one_problem(resized, aggregator_key, "inclusion", "tree of 4 leaves")
    bent = copy.deepcopy(bundle)
    first = bytearray(base64.b64decode(bent["inclusion_proof"][0]))
    first[0] ^= 0x80
    bent["inclusion_proof"][0] = base64.b64encode(bytes(first)).decode()
    one_problem(bent, aggregator_key, "inclusion")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("format", "something-else", "format"),
    ("leaf_index", "3", "leaf_index"),
    ("batch", "not base64!", "base64"),
    ("node_public_keys", ["not a pem"], "node key 0"),
    ("inclusion_proof", ["***"], "base64"),
])
def test_a_malformed_bundle_is_named_not_raised(log: Log, aggregator_key: Ed25519PrivateKey, field: str,
                                                value: object, words: str) -> None:
    bundle = log.bundle(0, 0)
    bundle[field] = value
    problems = verify_bundle(bundle, aggregator_key.public_key())
    assert problems and any(words in p for p in problems), problems


def test_a_missing_field_is_named(log: Log, aggregator_key: Ed25519PrivateKey) -> None:
    bundle = log.bundle(0, 0)
    del bundle["checkpoint"]
    assert verify_bundle(bundle, aggregator_key.public_key()) == ["malformed bundle: field 'checkpoint' is missing"]


def test_something_that_is_not_a_bundle_is_named(aggregator_key: Ed25519PrivateKey) -> None:
    assert verify_bundle([], aggregator_key.public_key()) == ["malformed bundle: not a JSON object"]  # type: ignore[arg-type]
