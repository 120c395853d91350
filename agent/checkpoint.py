"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 only.

A signed note (https://c2sp.org/signed-note, as golang.org/x/mod/sumdb/note writes it) is

    <text: one or more lines, each ending in "\\n">
    <blank line>
    — <key name> <base64(4-byte key ID || Ed25519 signature over the text bytes)>\\n   (one or more)

with key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]. The note is UTF-8 with
no control characters but newline; the text ends at the last blank line. A checkpoint
(https://c2sp.org/tlog-checkpoint) is a note whose text is: origin, tree size in decimal (no
leading zeros), the base64 RFC 6962 root hash, then optional non-empty extension lines.

Invariants:
- `open_checkpoint` returns a value only when the note parses, a signature line by the given key
  (same name and key ID) is present, and every such line verifies. Signatures by other keys
  (witness cosignatures, a rotated key) are ignored, as the spec requires.
- `sign_checkpoint` output opens with the matching public key to an equal `Checkpoint`.
- `check_consistent` decides between two already-opened checkpoints of one log with
  `merkle.verify_consistency`; a smaller newer tree is a ROLLBACK, never just "inconsistent".

No I/O, no clock: keys and times come in as values.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent import merkle
from agent.errors import LogsealError

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note; the spec asks for at least 16
MAX_TREE_SIZE = (1 << 63) - 1
# Optional extension line carrying the signing time (logseal's own; opaque to other tools).
TIME_EXTENSION = "logseal-time "
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")


class Verdict(enum.Enum):
    OK = "ok"
    MALFORMED = "malformed note or checkpoint"
    MISSING_SIGNATURE = "no signature by the expected key"
    BAD_SIGNATURE = "bad signature"
    ORIGIN_MISMATCH = "checkpoints of different logs"
    ROLLBACK = "rollback: the newer tree is smaller than the older"
    INCONSISTENT = "inconsistent: the older tree is not a prefix of the newer"


class CheckpointError(LogsealError, ValueError):
    """A note or checkpoint that cannot be trusted; `verdict` says why."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(f"{verdict.name}: {reason}")
        self.verdict = verdict
        self.reason = reason


def _malformed(reason: str) -> CheckpointError:
    return CheckpointError(Verdict.MALFORMED, reason)


def valid_key_name(name: str) -> bool:
    """Signed-note key names: non-empty, no Unicode whitespace, no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and \
        not _CONTROL_RE.search(name)


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def note_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + _raw_public(public_key)).digest()[:4]


def verifier_key_string(name: str, public_key: Ed25519PublicKey) -> str:
    """The note verifier key `<name>+<hex key ID>+<base64(0x01 || public key)>`."""
    if not valid_key_name(name):
        raise CheckpointError(Verdict.MALFORMED, f"invalid key name {name!r}")
    encoded = base64.b64encode(bytes([ALG_ED25519]) + _raw_public(public_key)).decode()
    return f"{name}+{note_key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Inverse of `verifier_key_string`: (name, public key); the key ID must match."""
    name, _, rest = vkey.partition("+")
    key_id_hex, _, key_b64 = rest.partition("+")
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except binascii.Error:
        raw = b""
    if (not valid_key_name(name) or not re.fullmatch(r"[0-9a-f]{8}", key_id_hex) or len(raw) != 33
            or raw[0] != ALG_ED25519):
        raise _malformed(f"not an Ed25519 note verifier key: {vkey!r}")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if note_key_id(name, public_key).hex() != key_id_hex:
        raise _malformed(f"verifier key {name}+{key_id_hex}: key ID does not match the key")
    return name, public_key


# --- signed notes ------------------------------------------------------------------------------


def sign_note(text: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign `text` (ending in a newline) as a signed note with one Ed25519 signature."""
    if not valid_key_name(key_name):
        raise _malformed(f"invalid key name {key_name!r}")
    if not text.endswith("\n") or _CONTROL_RE.search(text):
        raise _malformed("note text must end in a newline and hold no control characters but newline")
    data = text.encode()
    key_id = note_key_id(key_name, private_key.public_key())
    signature = base64.b64encode(key_id + private_key.sign(data)).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{key_name} {signature}\n"


def open_note(note: str | bytes, key_name: str, public_key: Ed25519PublicKey) -> str:
    """The text of `note` if it carries a valid signature by (key_name, public_key); else raise."""
    if isinstance(note, str):
        try:
            note = note.encode()
        except UnicodeEncodeError:
            raise _malformed("note is not valid UTF-8") from None
    try:
        decoded = note.decode()
    except UnicodeDecodeError:
        raise _malformed("note is not valid UTF-8") from None
    if _CONTROL_RE.search(decoded):
        raise _malformed("note holds a control character other than newline")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, block = note[:split + 1], note[split + 2:]
    if not block or not block.endswith(b"\n"):
        raise _malformed("the signature block is empty or does not end in a newline")
    want_id = note_key_id(key_name, public_key)
    lines = block[:-1].decode().split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed(f"{len(lines)} signatures, at most {MAX_SIGNATURES} are read")
    verified = 0
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise _malformed(f"signature line does not start with an em dash: {line[:40]!r}")
        name, sep, b64 = line[len(SIGNATURE_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raw = b""
        if not sep or not valid_key_name(name) or len(raw) < 5:
            raise _malformed(f"malformed signature line: {line[:60]!r}")
        if name != key_name or raw[:4] != want_id:
            continue  # another key's signature (a witness, a rotated key): ignored, as the spec says
        try:
            public_key.verify(raw[4:], text)
        except InvalidSignature:
            raise CheckpointError(Verdict.BAD_SIGNATURE,
                                  f"signature by {key_name}+{want_id.hex()} does not verify") from None
        verified += 1
    if not verified:
        raise CheckpointError(Verdict.MISSING_SIGNATURE, f"no signature by {key_name}+{want_id.hex()}")
    return text.decode()


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: `origin` names the log, `root` is the RFC 6962 root of `size` leaves."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL_RE.search(self.origin):
            raise _malformed(f"origin must be one non-empty line, got {self.origin!r}")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise _malformed(f"tree size must be 0..{MAX_TREE_SIZE}, got {self.size!r}")
        if len(self.root) != merkle.HASH_SIZE:
            raise _malformed(f"root hash must be {merkle.HASH_SIZE} bytes, got {len(self.root)}")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL_RE.search(line):
                raise _malformed(f"extension lines must be non-empty single lines, got {line!r}")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a note text (as returned by `open_note`) into a checkpoint, strictly."""
        if not text.endswith("\n"):
            raise _malformed("checkpoint text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise _malformed(f"checkpoint needs origin, size and root lines, got {len(lines)} line(s)")
        origin, size_line, root_line, *extensions = lines
        if not _SIZE_RE.fullmatch(size_line):
            raise _malformed(f"tree size must be decimal without leading zeros, got {size_line!r}")
        try:
            root = base64.b64decode(root_line, validate=True)
        except binascii.Error:
            root = b""
        if len(root) != merkle.HASH_SIZE or base64.b64encode(root).decode() != root_line:
            raise _malformed(f"root hash must be the base64 of {merkle.HASH_SIZE} bytes, got {root_line!r}")
        return cls(origin, int(size_line), root, tuple(extensions))

    @property
    def time_ns(self) -> int | None:
        """The signing time from a `logseal-time <ns>` extension line, if there is one."""
        for line in self.extensions:
            if line.startswith(TIME_EXTENSION) and _SIZE_RE.fullmatch(value := line[len(TIME_EXTENSION):]):
                return int(value)
        return None


def time_extension(time_ns: int) -> str:
    """The extension line recording a checkpoint's signing time (nanoseconds since the epoch)."""
    if time_ns < 0:
        raise _malformed(f"time must be >= 0, got {time_ns}")
    return f"{TIME_EXTENSION}{time_ns}"


def sign_checkpoint(cp: Checkpoint, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """The checkpoint as a signed note (C2SP recommends key_name == cp.origin)."""
    return sign_note(cp.body(), key_name, private_key)


def open_checkpoint(text: str | bytes, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Verify a signed checkpoint and parse it; raise CheckpointError (with its verdict) otherwise."""
    return Checkpoint.parse(open_note(text, key_name, public_key))


def check_consistent(older: Checkpoint, newer: Checkpoint, proof: Sequence[bytes]) -> Verdict:
    """Is `newer` an append-only extension of `older`? `proof` is the consistency proof between them."""
    if older.origin != newer.origin:
        return Verdict.ORIGIN_MISMATCH
    if newer.size < older.size:
        return Verdict.ROLLBACK
    if merkle.verify_consistency(older.size, newer.size, older.root, newer.root, proof):
        return Verdict.OK
    return Verdict.INCONSISTENT
