"""Evidence bundles: one event with everything needed to check it offline, with public keys only.

A bundle is a JSON object (bytes as standard base64):

    format            "logseal-evidence-v1"
    event_id          the event's `event.id` (node:stream:seq:index)
    event             the event as JSON, for reading
    event_line        the event's payload line exactly as the node sealed it (JSON text)
    batch             base64 of the batch exactly as the node signed and the store keeps it
    node_public_keys  PEM public keys of the node (its key chain; the one that signed must be there)
    leaf_index        the batch's leaf in the aggregator's Merkle log (leaf = leaf_hash(batch hash))
    tree_size         size of the tree the proof is for, equal to the checkpoint's size
    inclusion_proof   list of base64 hashes: the RFC 6962 audit path of the leaf
    checkpoint        the aggregator's signed checkpoint (C2SP signed note) for that tree
    key_epochs        (optional) base64 of the node's certifying batches (stream logseal-keys) in order:
                      the epoch chain from its enrolled key to the key that signed `batch`; empty when the
                      store no longer holds all of them (retention), and then `node_public_keys` must
                      hold the signing key

`verify_bundle` names every problem it finds, one line each, and keeps going where it can:
the node's Ed25519 signature over the batch hash (for a batch of a later key epoch: through the
epoch chain, from an enrolled key, each certificate signed by the epoch before it), the payload
digest, that `event_line` is a line of the payload byte for byte (found by `event.id`) and says
what `event` says, the
checkpoint's signature by the aggregator key, and the batch's inclusion at `leaf_index`.

No I/O: the caller reads and writes the JSON.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import merkle
from agent.checkpoint import CheckpointError, open_checkpoint
from agent.errors import LogsealError
from agent.keychain import EpochChain, read_cert
from agent.seal import Finding, SealedBatch, Verdict, key_id_of, open_payload, verify_signature
from agent.wire import WireError, batch_from_bytes

BUNDLE_FORMAT = "logseal-evidence-v1"
_FIELDS: dict[str, type] = {
    "format": str, "event_id": str, "event": dict, "event_line": str, "batch": str, "node_public_keys": list,
    "leaf_index": int, "tree_size": int, "inclusion_proof": list, "checkpoint": str,
}


class BundleError(LogsealError, ValueError):
    """A bundle cannot be built from what was given (e.g. the event is not in the batch)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _event_id(event: Mapping[str, Any]) -> str | None:
    inner = event.get("event")
    value = inner.get("id") if isinstance(inner, Mapping) else None
    return value if isinstance(value, str) else None


def _find_line(body: bytes, event_id: str) -> bytes | None:
    """The payload line whose `event.id` is `event_id`."""
    for line in body.split(b"\n") if body else []:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and _event_id(parsed) == event_id:
            return line
    return None


def build_bundle(event: Mapping[str, Any] | bytes | str, batch_bytes: bytes,
                 node_public_keys_pem: Sequence[str | bytes], leaf_index: int, tree_size: int,
                 inclusion_proof: Sequence[bytes], checkpoint_text: str,
                 key_epochs: Sequence[bytes] = ()) -> dict[str, Any]:
    """Assemble the bundle for `event` (its JSON object, or its payload line) stored in `batch_bytes`.

    The event's exact payload line is taken from the batch itself, so the bundle carries the bytes
    the node signed even when `event` was re-serialized on the way (e.g. by a query).
    """
    parsed = orjson.loads(event) if isinstance(event, bytes | str) else event
    event_id = _event_id(parsed) if isinstance(parsed, Mapping) else None
    if event_id is None:
        raise BundleError("the event has no event.id")
    try:
        batch = batch_from_bytes(batch_bytes)
    except WireError as exc:
        raise BundleError(f"batch: {exc}") from None
    opened = open_payload(batch)
    if opened.body is None:
        raise BundleError(f"batch payload: {opened.finding}")
    line = _find_line(opened.body, event_id)
    if line is None:
        raise BundleError(f"event {event_id} is not in the batch {_batch_name(batch)}")
    keys = [k.decode() if isinstance(k, bytes) else k for k in node_public_keys_pem]
    return {
        "format": BUNDLE_FORMAT,
        "event_id": event_id,
        "event": orjson.loads(line),
        "event_line": line.decode(),
        "batch": _b64(batch_bytes),
        "node_public_keys": keys,
        "leaf_index": leaf_index,
        "tree_size": tree_size,
        "inclusion_proof": [_b64(h) for h in inclusion_proof],
        "checkpoint": checkpoint_text,
        "key_epochs": [_b64(raw) for raw in key_epochs],
    }


def _batch_name(batch: SealedBatch) -> str:
    h = batch.header
    return f"{h.node_id}/{h.stream_id}#{h.seq}"


def _decode_b64(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return None


def _shape_problems(bundle: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, kind in _FIELDS.items():
        value = bundle.get(name)
        if value is None:
            problems.append(f"malformed bundle: field {name!r} is missing")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"malformed bundle: field {name!r} must be a JSON {kind.__name__}")
    if not problems and bundle["format"] != BUNDLE_FORMAT:
        problems.append(f"malformed bundle: format {bundle['format']!r}, this build reads {BUNDLE_FORMAT!r}")
    return problems


def _load_node_keys(pems: list[Any], problems: list[str]) -> list[Ed25519PublicKey]:
    keys = []
    for i, pem in enumerate(pems):
        try:
            key = serialization.load_pem_public_key(pem.encode()) if isinstance(pem, str) else None
        except ValueError:
            key = None
        if isinstance(key, Ed25519PublicKey):
            keys.append(key)
        else:
            problems.append(f"node key {i}: not an Ed25519 public key in PEM")
    return keys


def verify_bundle(bundle: Mapping[str, Any], aggregator_public_key: Ed25519PublicKey, *,
                  key_name: str | None = None,
                  trusted_node_keys: Sequence[Ed25519PublicKey] | None = None) -> list[str]:
    """Check a bundle offline; return one line per problem (empty: the evidence holds).

    `key_name` is the aggregator's note key name (default: the checkpoint's origin, which is the
    name it signs with). `trusted_node_keys`, when given, replace the keys carried in the bundle,
    for an auditor who holds the node's enrolment independently.
    """
    if not isinstance(bundle, Mapping):
        return ["malformed bundle: not a JSON object"]
    problems = _shape_problems(bundle)
    if problems:
        return problems
    batch_bytes = _decode_b64(bundle["batch"])
    if batch_bytes is None:
        return ["malformed bundle: batch is not base64"]
    try:
        batch = batch_from_bytes(batch_bytes)
    except WireError as exc:
        return [f"batch: {exc}"]
    name = _batch_name(batch)

    keys = list(trusted_node_keys) if trusted_node_keys is not None else \
        _load_node_keys(bundle["node_public_keys"], problems)
    certificates = bundle.get("key_epochs") or []
    if batch.header.version >= 2 and certificates:
        signed = _check_epochs(batch, keys, certificates)
    else:  # no chain carried (e.g. retention deleted a certificate): the keys given must hold the signer's
        signed = verify_signature(batch, {batch.header.node_id: {key_id_of(k): k for k in keys}})
    if not signed.ok:
        problems.append(f"batch {name}: node signature: {signed}")

    opened = open_payload(batch)
    if opened.body is None or not opened.finding.ok:
        problems.append(f"batch {name}: payload: {opened.finding}")
    else:
        problems.extend(_event_problems(bundle, opened.body, name))

    cp_key_name = key_name if key_name is not None else bundle["checkpoint"].partition("\n")[0]
    try:
        cp = open_checkpoint(bundle["checkpoint"], cp_key_name, aggregator_public_key)
    except CheckpointError as exc:
        problems.append(f"checkpoint: {exc}")
        return problems
    if bundle["tree_size"] != cp.size:
        problems.append(f"inclusion: the proof is for a tree of {bundle['tree_size']} leaves, "
                        f"the checkpoint's tree has {cp.size}")
        return problems
    proof = [_decode_b64(h) for h in bundle["inclusion_proof"]]
    path = [h for h in proof if h is not None]
    if len(path) != len(proof):
        problems.append("malformed bundle: inclusion_proof holds a value that is not base64")
    elif not merkle.verify_inclusion(merkle.leaf_hash(batch.batch_hash), bundle["leaf_index"], cp.size, path,
                                     cp.root):
        problems.append(f"inclusion: batch {name} is not at leaf {bundle['leaf_index']} of the checkpoint's "
                        f"tree of {cp.size} leaves")
    return problems


def _check_epochs(batch: SealedBatch, keys: Sequence[Ed25519PublicKey], certificates: list[Any]) -> Finding:
    """Walk the epoch chain from an enrolled key to the batch's epoch, then check the batch with it."""
    enrolled = {key_id_of(k): k for k in keys}
    chain: EpochChain | None = None
    for i, item in enumerate(certificates):
        raw = _decode_b64(item)
        try:
            cert_batch = batch_from_bytes(raw) if raw is not None else None
        except WireError:
            cert_batch = None
        if cert_batch is None:
            return Finding(Verdict.MALFORMED, f"key_epochs[{i}] is not a base64 batch")
        h = cert_batch.header
        if chain is None:
            first = enrolled.get(h.key_id) if h.key_epoch == 0 else None
            if first is None:
                return Finding(Verdict.UNKNOWN_KEY, "the first key epoch certificate is not signed by an enrolled key")
            chain = EpochChain({0: first})
        key = chain.key_for(h)
        finding = key if isinstance(key, Finding) else verify_signature(cert_batch, {h.node_id: {h.key_id: key}})
        body = open_payload(cert_batch).body if finding.ok else None
        read = read_cert(h, body) if body is not None else Finding(Verdict.MALFORMED, "unreadable payload")
        if finding.ok:
            finding = read if isinstance(read, Finding) else chain.certify(h, read)
        if not finding.ok:
            return Finding(finding.verdict, f"key_epochs[{i}] ({_batch_name(cert_batch)}): {finding.reason}")
    if chain is None:
        first = enrolled.get(batch.header.key_id)
        if first is None or batch.header.key_epoch != 0:
            return Finding(Verdict.UNKNOWN_KEY, f"no epoch chain leads to epoch {batch.header.key_epoch}")
        chain = EpochChain({0: first})
    key = chain.key_for(batch.header)
    if isinstance(key, Finding):
        return key
    signed = verify_signature(batch, {batch.header.node_id: {batch.header.key_id: key}})
    return signed if not signed.ok else chain.place(batch.header)


def _event_problems(bundle: Mapping[str, Any], body: bytes, name: str) -> list[str]:
    event_id = bundle["event_id"]
    line = _find_line(body, event_id)
    if line is None:
        return [f"event {event_id}: not in the payload of batch {name}"]
    problems = []
    if bundle["event_line"].encode() != line:
        problems.append(f"event {event_id}: event_line differs from the payload line the node signed")
    if bundle["event"] != orjson.loads(line):
        problems.append(f"event {event_id}: the event shown differs from the payload line the node signed")
    return problems
