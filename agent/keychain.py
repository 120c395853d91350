"""Forward-secure key epochs of one node: the pure rules that the aggregator and `verify` both apply.

Epoch 0 is the node's enrolled key. The last batch of epoch e is a batch of the `logseal-keys`
stream whose signed header carries `next_key`: signed by epoch e's key, it certifies epoch e+1's
public key, and its one event names, per stream, the last seq sealed at epoch e (`ends`). So each
epoch owns one seq range per stream, (end of e-1, end of e], the current epoch's range being open
above. A batch is well placed when it is signed by the key of the epoch it claims and its seq lies in
that epoch's range; anything else is key-epoch misuse. A batch claiming an epoch not certified yet
is only pending: its certifying batch may still be on its way.

The agent erases each epoch's private key once the certifying batch is spooled, so a key stolen
at epoch N can sign neither for an earlier epoch (wrong key) nor at an earlier place (wrong range).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.normalize.common import Event
from agent.seal import FINDING_OK, BatchHeader, Finding, Verdict, decode_events, key_id_of, raw_public

KEYS_STREAM = "logseal-keys"
KEYS_DATASET = "logseal.keys"


@dataclass(frozen=True, slots=True)
class EpochCert:
    """Epoch `epoch`'s public key, and where each stream stood when epoch `epoch - 1` ended."""

    epoch: int
    key: Ed25519PublicKey
    ends: Mapping[str, int]


def cert_event(node_id: str, epoch: int, key: Ed25519PublicKey, ends: Mapping[str, int], received: str) -> Event:
    """The one event of a certifying batch (sealed at epoch `epoch - 1`, header `next_key` = `key`)."""
    kid = key_id_of(key)
    return {"@timestamp": received,
            "event": {"kind": "event", "category": ["configuration"], "type": ["change"],
                      "action": "key_epoch_change", "outcome": "success", "dataset": KEYS_DATASET},
            "host": {"name": node_id},
            "message": f"node key epoch {epoch} begins with key {kid}; epoch {epoch - 1}'s private key is erased",
            "logseal": {"key_epoch": {"epoch": epoch, "key_id": kid, "public_key": raw_public(key).hex(),
                                      "ends": dict(sorted(ends.items()))}}}


def read_cert(header: BatchHeader, body: bytes) -> EpochCert | Finding:
    """The certificate a batch with `next_key` carries, or why it is malformed."""
    bad = Verdict.MALFORMED
    if header.stream_id != KEYS_STREAM:
        return Finding(bad, f"next_key in stream {header.stream_id!r}; only {KEYS_STREAM!r} certifies epochs")
    try:
        events = decode_events(body)
    except orjson.JSONDecodeError:
        return Finding(bad, "certifying batch: payload is not JSON lines")
    if len(events) != 1:
        return Finding(bad, f"certifying batch holds {len(events)} events, not 1")
    item = (events[0].get("logseal") or {}).get("key_epoch") if isinstance(events[0], dict) else None
    if not isinstance(item, dict):
        return Finding(bad, "certifying batch: no logseal.key_epoch in its event")
    epoch, public, ends = item.get("epoch"), item.get("public_key"), item.get("ends")
    if epoch != header.key_epoch + 1:
        return Finding(bad, f"certifying batch signed at epoch {header.key_epoch} names epoch {epoch}")
    if public != header.next_key.hex():
        return Finding(bad, "certifying batch: the event's public key is not the header's next_key")
    if (not isinstance(ends, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 0
                                              for k, v in ends.items())):
        return Finding(bad, "certifying batch: ends must map stream names to seqs")
    if ends.get(KEYS_STREAM) != header.seq:
        return Finding(bad, f"certifying batch: ends names {ends.get(KEYS_STREAM)} for {KEYS_STREAM}, it is "
                            f"seq {header.seq}")
    return EpochCert(header.key_epoch + 1, Ed25519PublicKey.from_public_bytes(header.next_key), dict(ends))


@dataclass
class EpochChain:
    """One node's epochs as far as they are certified: key per epoch, stream ends per closed epoch."""

    keys: dict[int, Ed25519PublicKey]
    ends: dict[int, Mapping[str, int]] = field(default_factory=dict)

    @property
    def current(self) -> int:
        return max(self.keys)

    def key_for(self, header: BatchHeader) -> Ed25519PublicKey | Finding:
        """The key a batch must be signed with, or why its epoch or key id is wrong."""
        epoch = header.key_epoch
        if epoch > self.current:
            return Finding(Verdict.KEY_EPOCH_PENDING, f"epoch {epoch} is not certified yet (current "
                                                      f"{self.current}); resend after its certifying batch")
        key = self.keys[epoch]
        if key_id_of(key) == header.key_id:
            return key
        for other, candidate in self.keys.items():
            if key_id_of(candidate) == header.key_id:
                return Finding(Verdict.KEY_EPOCH_MISUSE, f"signed with the key of epoch {other} "
                                                         f"({header.key_id}) but claims epoch {epoch}")
        return Finding(Verdict.UNKNOWN_KEY, f"key {header.key_id!r} is not epoch {epoch}'s key of node "
                                            f"{header.node_id!r}")

    def place(self, header: BatchHeader) -> Finding:
        """Is this batch's seq inside the range its epoch owns in its stream?"""
        epoch, stream, seq = header.key_epoch, header.stream_id, header.seq
        low = self.ends[epoch - 1].get(stream, 0) if epoch > 0 and epoch - 1 in self.ends else 0
        if seq <= low:
            return Finding(Verdict.KEY_EPOCH_MISUSE, f"seq {seq} of {stream} was sealed before epoch {epoch} "
                                                     f"began (epoch {epoch - 1} ended at seq {low})")
        if epoch < self.current:
            high = self.ends[epoch].get(stream, 0)
            if seq > high:
                return Finding(Verdict.KEY_EPOCH_MISUSE,
                               f"signed at retired epoch {epoch} (current {self.current}), which ended at seq "
                               f"{high} of {stream}; seq {seq} is after it")
        return FINDING_OK

    def certify(self, header: BatchHeader, cert: EpochCert) -> Finding:
        """Take epoch `cert.epoch` from its certifying batch (idempotent for the same certificate)."""
        known = self.keys.get(cert.epoch)
        if known is not None:
            if raw_public(known) == raw_public(cert.key) and dict(self.ends.get(header.key_epoch, {})) == dict(
                    cert.ends):
                return FINDING_OK
            return Finding(Verdict.KEY_EPOCH_MISUSE, f"a second, different certificate for epoch {cert.epoch}")
        if cert.epoch != self.current + 1:
            return Finding(Verdict.KEY_EPOCH_MISUSE, f"certifies epoch {cert.epoch} while the current is "
                                                     f"{self.current}")
        self.keys[cert.epoch] = cert.key
        self.ends[header.key_epoch] = dict(cert.ends)
        return FINDING_OK
