"""Key epochs as plain values: the version 2 header, the certifying batch, and where each epoch's key
may sign (agent/keychain.py), plus boots (agent/aggregator/epochs.py)."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.aggregator.epochs import Boot, check_boot
from agent.keychain import KEYS_STREAM, EpochChain, cert_event, read_cert
from agent.seal import (
    GENESIS,
    ChainHead,
    Finding,
    SealedBatch,
    Sealer,
    Verdict,
    batch_hash,
    decode_events,
    keyring_from,
    open_payload,
    verify_signature,
)

NOW = "2026-11-26T10:00:00.000000Z"


def ev(i: int) -> dict[str, object]:
    return {"@timestamp": NOW, "event": {"dataset": "system.auth"}, "message": f"line {i}"}


class Node:
    """A node sealing two streams, changing epochs the way the agent does."""

    def __init__(self) -> None:
        self.keys = [Ed25519PrivateKey.generate()]
        self.sealer = Sealer("node-1", self.keys[0], key_epoch=0, boot_id=b"b" * 16, boot_counter=1)
        self.heads: dict[str, ChainHead] = {}

    def seal(self, stream: str) -> SealedBatch:
        batch = self.sealer.seal(stream, self.heads.get(stream, GENESIS), [ev(len(self.heads))])
        self.heads[stream] = ChainHead(batch.header.seq, batch.batch_hash)
        return batch

    def change_epoch(self) -> SealedBatch:
        new = Ed25519PrivateKey.generate()
        head = self.heads.get(KEYS_STREAM, GENESIS)
        ends = {s: h.seq for s, h in self.heads.items()} | {KEYS_STREAM: head.seq + 1}
        event = cert_event("node-1", self.sealer.key_epoch + 1, new.public_key(), ends, NOW)
        cert = self.sealer.seal_encoded(head, self.sealer.encode(KEYS_STREAM, head.seq + 1, [event]),
                                        next_key=new.public_key())
        self.heads[KEYS_STREAM] = ChainHead(cert.header.seq, cert.batch_hash)
        self.sealer.switch_key(new, self.sealer.key_epoch + 1)
        self.keys.append(new)
        return cert


def certify(chain: EpochChain, cert: SealedBatch) -> Finding:
    body = open_payload(cert).body
    assert body is not None
    read = read_cert(cert.header, body)
    assert not isinstance(read, Finding), read
    return chain.certify(cert.header, read)


def test_a_version_2_header_binds_epoch_boot_and_next_key() -> None:
    node = Node()
    batch = node.seal("auth")
    h = batch.header
    assert (h.version, h.key_epoch, h.boot_id, h.boot_counter, h.next_key) == (2, 0, b"b" * 16, 1, b"")
    for changed in (replace(h, key_epoch=1), replace(h, boot_id=b"c" * 16), replace(h, boot_counter=2),
                    replace(h, next_key=bytes(32))):
        assert batch_hash(changed) != batch.batch_hash


def test_a_version_1_batch_still_verifies_read_only() -> None:
    key = Ed25519PrivateKey.generate()
    v2 = Sealer("node-1", key).seal("auth", GENESIS, [ev(0)])
    header = replace(v2.header, version=1)
    digest = batch_hash(header)
    v1 = SealedBatch(header, v2.payload, key.sign(digest), digest)
    assert digest != v2.batch_hash  # its own domain tag and fields
    assert verify_signature(v1, keyring_from({"node-1": key.public_key()})).ok
    smuggled = replace(header, key_epoch=3)
    assert verify_signature(SealedBatch(smuggled, v2.payload, key.sign(batch_hash(smuggled)), batch_hash(smuggled)),
                            keyring_from({"node-1": key.public_key()})).verdict is Verdict.MALFORMED


def test_the_certifying_batch_names_the_next_key_and_where_each_stream_ended() -> None:
    node = Node()
    node.seal("auth")
    node.seal("auth")
    node.seal("audit")
    cert = node.change_epoch()
    assert cert.header.key_epoch == 0 and cert.header.stream_id == KEYS_STREAM and len(cert.header.next_key) == 32
    body = open_payload(cert).body
    assert body is not None
    read = read_cert(cert.header, body)
    assert not isinstance(read, Finding)
    assert read.epoch == 1 and dict(read.ends) == {"auth": 2, "audit": 1, KEYS_STREAM: 1}
    assert decode_events(body)[0]["event"]["action"] == "key_epoch_change"


def test_a_certificate_that_disagrees_with_its_header_is_malformed() -> None:
    node = Node()
    cert = node.change_epoch()
    body = open_payload(cert).body
    assert body is not None
    for header in (replace(cert.header, next_key=bytes(32)), replace(cert.header, key_epoch=4),
                   replace(cert.header, stream_id="auth"), replace(cert.header, seq=9)):
        result = read_cert(header, body)
        assert isinstance(result, Finding) and result.verdict is Verdict.MALFORMED, header


def test_each_epoch_signs_only_its_own_range_and_a_stolen_key_cannot_sign_for_the_past() -> None:
    node = Node()
    chain = EpochChain({0: node.keys[0].public_key()})
    a1, a2 = node.seal("auth"), node.seal("auth")
    assert certify(chain, node.change_epoch()).ok
    a3 = node.seal("auth")
    assert chain.current == 1
    # Epoch 0's batches, even arriving late, are in epoch 0's range; epoch 1's batch is in its own.
    for batch in (a1, a2, a3):
        assert chain.key_for(batch.header) is chain.keys[batch.header.key_epoch]
        assert chain.place(batch.header).ok
    stolen = node.keys[1]  # the current key, taken from the node's disk
    forger = Sealer("node-1", stolen, key_epoch=0, boot_id=b"b" * 16, boot_counter=1)
    claimed_past = forger.seal("auth", ChainHead(a3.header.seq, a3.batch_hash), [ev(9)])
    misuse = chain.key_for(claimed_past.header)
    assert isinstance(misuse, Finding) and misuse.verdict is Verdict.KEY_EPOCH_MISUSE
    assert "key of epoch 1" in misuse.reason and "claims epoch 0" in misuse.reason
    # The current key at a place epoch 0 owned (e.g. a seq never delivered) is misuse too.
    early = replace(a2.header, key_epoch=1, key_id=node.sealer.key_id)
    assert chain.place(early).verdict is Verdict.KEY_EPOCH_MISUSE


def test_a_retired_key_cannot_sign_after_its_epoch_ended() -> None:
    node = Node()
    chain = EpochChain({0: node.keys[0].public_key()})
    node.seal("auth")
    assert certify(chain, node.change_epoch()).ok
    old = Sealer("node-1", node.keys[0], key_epoch=0, boot_id=b"b" * 16, boot_counter=1)
    late = old.seal("auth", node.heads["auth"], [ev(5)])
    assert chain.key_for(late.header) is chain.keys[0]  # the right key for its epoch ...
    finding = chain.place(late.header)
    assert finding.verdict is Verdict.KEY_EPOCH_MISUSE and "retired epoch 0" in finding.reason  # ... too late


def test_an_epoch_not_yet_certified_is_pending_and_an_unknown_key_is_unknown() -> None:
    node = Node()
    chain = EpochChain({0: node.keys[0].public_key()})
    node.change_epoch()
    ahead = node.seal("auth")
    assert isinstance(r := chain.key_for(ahead.header), Finding) and r.verdict is Verdict.KEY_EPOCH_PENDING
    stranger = Sealer("node-1", Ed25519PrivateKey.generate()).seal("auth", GENESIS, [ev(0)])
    assert isinstance(r := chain.key_for(stranger.header), Finding) and r.verdict is Verdict.UNKNOWN_KEY


def test_a_second_different_certificate_for_an_epoch_is_misuse_the_same_one_is_not() -> None:
    node = Node()
    chain = EpochChain({0: node.keys[0].public_key()})
    cert = node.change_epoch()
    assert certify(chain, cert).ok
    assert certify(chain, cert).ok  # a resend
    rival = Node()
    rival.keys[0] = node.keys[0]
    rival.sealer = Sealer("node-1", node.keys[0], key_epoch=0, boot_id=b"b" * 16, boot_counter=1)
    assert certify(chain, rival.change_epoch()).verdict is Verdict.KEY_EPOCH_MISUSE


def test_a_stream_never_goes_back_to_an_older_boot_and_a_boot_counter_has_one_id() -> None:
    h = Node().seal("auth").header  # boot 1, id b"b" * 16
    assert check_boot(None, None, h).ok
    assert check_boot(Boot(1, b"b" * 16), Boot(1, b"b" * 16), h).ok
    assert check_boot(None, Boot(0, b""), h).ok
    older = check_boot(None, Boot(2, b"x" * 16), h)
    assert older.verdict is Verdict.REPLAYED and "boot 1" in older.reason and "later boot 2" in older.reason
    other_id = check_boot(Boot(1, b"x" * 16), None, h)
    assert other_id.verdict is Verdict.REPLAYED and "boot id" in other_id.reason
