"""Enrollment attestations: the aggregator's signature over each node's enrolled epoch-0 key.

Enrolling a key is a security act (pinned from `trusted_keys_dir`, or trust on first use), so it is
kept as a record the aggregator signs, in the C2SP signed-note form its checkpoints use: `logseal
verify` checks the signature against `aggregator.pub` and that the enrolled key is the one the
index holds, so a key swapped in the index or a pin added by hand shows. Pure: keys come in as values.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.checkpoint import open_note, sign_note

HEADER = "logseal enrollment v1"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def enrollment_text(origin: str, node: str, public_key: bytes, how: str, detail: str) -> str:
    lines = [HEADER, f"origin {origin}", f"node {_one_line(node)}", f"key {public_key.hex()}", f"how {how}",
             f"detail {_one_line(detail)}"]
    return "".join(line + "\n" for line in lines)


def attest(origin: str, key: Ed25519PrivateKey, node: str, public_key: bytes, how: str, detail: str) -> str:
    """The signature line (no newline) over the enrollment's text."""
    note = sign_note(enrollment_text(origin, node, public_key, how, detail), origin, key)
    return note.rstrip("\n").rpartition("\n")[2]


def check_attestation(origin: str, aggregator_pub: Ed25519PublicKey, node: str, public_key: bytes, how: str,
                      detail: str, signature: str) -> None:
    """Raise CheckpointError unless `signature` is the aggregator's over exactly this enrollment."""
    open_note(f"{enrollment_text(origin, node, public_key, how, detail)}\n{signature}\n", origin, aggregator_pub)
