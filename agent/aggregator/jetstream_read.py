"""`verify --jetstream` and `query --jetstream`: read a JetStream store's stream like a local store.

Verification walks every message of the stream in order: each batch's signature (by its node's
key epochs, re-derived from the certifying batches in stream order, as `verify STORE` does), payload digest
and chain link (a second copy of a (node, stream, seq) is `replayed`: stored twice), the batch's
subject against its header, the Merkle log recomputed in stream order against the bucket's
append state and against every signed checkpoint, and kept equivocation evidence. Keys come from
the bucket (`key.*`, `log`) unless given as files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent import merkle
from agent.aggregator.enrollment import check_attestation
from agent.aggregator.epochs import EpochRecord
from agent.aggregator.index_rows import index_rows
from agent.aggregator.jetstream import (
    LOG_KEY,
    MERKLE_KEY,
    Names,
    connect,
    iter_messages,
    parse_epochs,
    parse_merkle,
    untoken,
)
from agent.aggregator.nats_tls import NatsTls
from agent.aggregator.query import EventFilter
from agent.aggregator.verify import _KIND_BY_VERDICT, BAD_ENROLLMENT, DeclaredGap, Problem, Report, _EpochWalk
from agent.checkpoint import CheckpointError, open_checkpoint
from agent.errors import StoreError
from agent.keys import load_public_key, load_trusted_keys
from agent.seal import ChainTracker, Keyring, key_id_of, keyring_from, open_payload
from agent.wire import WireError, batch_from_bytes

T = TypeVar("T")


def servers_of(url: str) -> list[str]:
    """`--jetstream` takes one NATS URL or several, comma-separated."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers or not all(u.startswith(("nats://", "tls://")) for u in servers):
        raise StoreError(f"--jetstream {url!r}: give NATS URLs like nats://127.0.0.1:4222 (comma-separated)")
    return servers


async def _open(servers: Sequence[str], stream: str, tls: NatsTls | None = None) -> tuple[Any, Any, Any]:
    nc = await connect(servers, name="logseal-reader", tls=tls)
    js = nc.jetstream(timeout=10)
    names = Names(stream)
    try:
        await js.stream_info(stream)
        kv = await js.key_value(names.bucket)
    except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
        await nc.close()
        raise StoreError(f"no logseal stream {stream!r} (with bucket {names.bucket!r}) at "
                         f"{', '.join(servers)}") from None
    except BaseException:
        await nc.close()
        raise
    return nc, js, kv


async def _kv_value(kv: Any, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return bytes(entry.value) if entry.value is not None else None


async def _enrollments(kv: Any) -> list[tuple[str, EpochRecord]]:
    """Each node's epoch-0 record as the bucket holds it (`epochs.<node>`)."""
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
    out = []
    for key in sorted(k for k in keys if k.startswith("epochs.")):
        value = await _kv_value(kv, key)
        first = next((r for r in parse_epochs(value) if r.epoch == 0), None) if value is not None else None
        if first is not None:
            out.append((untoken(key.split(".", 1)[1]), first))
    return out


def _check_enrollments(enrolled: list[tuple[str, EpochRecord]], keyring: Keyring, log_doc: bytes | None,
                       aggregator_pub: Path | None, names: Names, report: Report, add: Any) -> None:
    """As `verify STORE` checks its `enrollments` table: signed by the log's key, and the node's key."""
    origin, public_key = _log_identity(log_doc, aggregator_pub)
    for node, record in enrolled:
        where = f"bucket {names.bucket} key {names.epochs_key(node)}"
        if node in keyring and key_id_of(record.key) not in keyring[node]:
            add(BAD_ENROLLMENT, where, "", "the enrolled key is not a key the node's batches verify with")
        if not record.attestation:
            report.info.append(f"enrollment of {node} ({record.how}) carries no aggregator attestation")
            continue
        if public_key is None or origin is None:
            report.info.append(f"enrollment of {node}: attestation not checked (no log key)")
            continue
        try:
            check_attestation(origin, public_key, node, record.public_key, record.how, record.detail,
                              record.attestation)
        except CheckpointError as exc:
            add(BAD_ENROLLMENT, where, "", f"the aggregator's attestation does not match this enrollment: {exc}")


def _log_identity(log_doc: bytes | None, aggregator_pub: Path | None) -> tuple[str | None, Ed25519PublicKey | None]:
    """The log's origin and signing key: the key given apart from the cluster wins over the bucket's copy."""
    origin, public_key = None, load_public_key(aggregator_pub) if aggregator_pub is not None else None
    if log_doc is not None:
        doc = orjson.loads(log_doc)
        origin = str(doc["origin"])
        if public_key is None:
            loaded = load_pem_public_key(str(doc["pub"]).encode())
            public_key = loaded if isinstance(loaded, Ed25519PublicKey) else None
    return origin, public_key


async def _bucket_keyring(kv: Any) -> Keyring:
    ring: dict[str, dict[str, Ed25519PublicKey]] = {}
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return ring
    for key in keys:
        if not key.startswith("key."):
            continue
        _, node, key_id = key.split(".", 2)
        pem = await _kv_value(kv, key)
        if pem is None:
            continue
        public = load_pem_public_key(pem)
        if isinstance(public, Ed25519PublicKey):
            ring.setdefault(untoken(node), {})[untoken(key_id)] = public
    return ring


async def _verify(servers: Sequence[str], stream: str, keys_dir: Path | None, aggregator_pub: Path | None,
                  tls: NatsTls | None = None) -> Report:
    nc, js, kv = await _open(servers, stream, tls)
    names = Names(stream)
    report = Report(store=f"{','.join(servers)} stream {stream}")

    def add(kind: str, where: str, batch: str, detail: str) -> None:
        report.problems.append(Problem(kind, where, batch, detail))

    try:
        keyring = keyring_from(load_trusted_keys(keys_dir)) if keys_dir is not None else await _bucket_keyring(kv)
        log_doc = await _kv_value(kv, LOG_KEY)
        merkle_doc = await _kv_value(kv, MERKLE_KEY)
        enrolled = await _enrollments(kv)
        chains: dict[tuple[str, str], ChainTracker] = {}
        epochs = _EpochWalk(keyring)
        leaves: list[bytes] = []
        notes: list[tuple[str, str]] = []
        async for msg in iter_messages(js, stream, f"{stream}.>"):
            sseq = msg.metadata.sequence.stream
            where = f"{stream}#{sseq}"
            subject = msg.subject
            if subject == names.checkpoints:
                notes.append((where, msg.data.decode(errors="replace")))
                continue
            if subject.startswith(f"{stream}.equivocation."):
                add("equivocation", where, subject.split(".", 2)[2], "the node signed two different batches for "
                                                                     "one seq; the second is kept as evidence")
                continue
            if not names.is_batch(subject):
                continue
            try:
                batch = batch_from_bytes(msg.data)
            except WireError as exc:
                add("modified", where, "", str(exc))
                continue
            h = batch.header
            name = f"{h.node_id}/{h.stream_id}#{h.seq}"
            leaves.append(merkle.leaf_hash(batch.batch_hash))
            report.batches += 1
            if subject != names.batch_subject(h.node_id, h.stream_id):
                add("modified", where, name, f"published on {subject}, not on its chain's subject")
            finding = epochs.check(batch)
            if not finding.ok:
                add(_KIND_BY_VERDICT[finding.verdict], where, name, str(finding))
            if batch.payload_dropped:
                report.gaps.append(DeclaredGap(where, name, f"payload of {h.event_count} events dropped by the node "
                                                            "(spool full)"))
            else:
                report.events += h.event_count
                opened = open_payload(batch)
                if not opened.finding.ok:
                    add(_KIND_BY_VERDICT[opened.finding.verdict], where, name, str(opened.finding))
                elif finding.ok and h.next_key and opened.body is not None:
                    certified = epochs.certify(batch, opened.body)
                    if not certified.ok:
                        add(_KIND_BY_VERDICT[certified.verdict], where, name, str(certified))
                if opened.finding.ok and opened.body:
                    for row in index_rows(opened.body):
                        if row[2] == "logseal.gap":
                            report.gaps.append(DeclaredGap(where, name, f"gap record at event {row[0]}"))
            link = chains.setdefault((h.node_id, h.stream_id), ChainTracker()).observe(h, batch.batch_hash)
            if not link.ok:
                add(_KIND_BY_VERDICT[link.verdict], where, name, str(link))
    finally:
        await nc.close()
    _check_log(report, names, leaves, merkle_doc, log_doc, notes, aggregator_pub, add)
    _check_enrollments(enrolled, keyring, log_doc, aggregator_pub, names, report, add)
    return report


def _check_log(report: Report, names: Names, leaves: list[bytes], merkle_doc: bytes | None, log_doc: bytes | None,
               notes: list[tuple[str, str]], aggregator_pub: Path | None, add: Any) -> None:
    report.tree_size = len(leaves)
    report.checkpoints = len(notes)
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
    state = merkle.MerkleState()
    for leaf in leaves:
        state.append(leaf)
        roots[state.size] = state.root()
    bucket = f"bucket {names.bucket} key merkle"
    if merkle_doc is not None:
        try:
            kv_state, _ = parse_merkle(merkle_doc)
        except (StoreError, merkle.MerkleError, ValueError, KeyError) as exc:
            add("modified", bucket, "", f"the Merkle append state cannot be read: {exc}")
        else:
            if kv_state.size > len(leaves):
                add("rollback", bucket, "", f"the Merkle state covers {kv_state.size} batches, the stream holds "
                                            f"{len(leaves)}: batches were removed")
            elif kv_state.root() != roots[kv_state.size]:
                add("inclusion-failure", bucket, "", f"the Merkle state's root of {kv_state.size} batches is not "
                                                     "the root of the stream's first batches")
            elif kv_state.size < len(leaves):
                report.info.append(f"the Merkle state covers {kv_state.size} of {len(leaves)} batches; the next "
                                   "append extends it")
    origin, public_key = _log_identity(log_doc, aggregator_pub)
    if notes and (public_key is None or origin is None):
        add("checkpoint-signature", f"bucket {names.bucket} key log", "", "no log key to check the checkpoints with")
        return
    previous = 0
    for where, note in notes:
        assert public_key is not None and origin is not None
        try:
            cp = open_checkpoint(note, origin, public_key)
        except CheckpointError as exc:
            add("checkpoint-signature", where, "", f"the checkpoint does not verify with the log key: {exc}")
            continue
        if cp.size < previous:
            add("inconsistent-checkpoints", where, "", f"signed a tree of {cp.size} batches after one of {previous}")
        previous = max(previous, cp.size)
        if cp.size > len(leaves):
            add("rollback", where, "", f"a checkpoint of {cp.size} batches was signed, the stream holds {len(leaves)}")
        elif roots[cp.size] != cp.root:
            add("inclusion-failure", where, "", f"the root of the stream's first {cp.size} batches is not the signed "
                                                "root: a batch under this checkpoint was changed, removed or inserted")
    if len(leaves) > previous:
        report.info.append(f"unsealed tail: {len(leaves) - previous} batch(es) after the last checkpoint "
                           f"(size {previous}); a later checkpoint will cover them")


# A read that times out (a leader election, a loaded cluster) is started again, a few times.
_TRANSIENT = (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError,
              TimeoutError)
# A cluster that just lost a node elects new stream and consumer leaders: reads are tried again for
# up to about a minute before the command gives up.
READ_ATTEMPTS = 6


async def _retried(read: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return await read()
        except _TRANSIENT:
            if attempt == READ_ATTEMPTS:
                raise
            await asyncio.sleep(min(1.0 * attempt, 3.0))  # back off before reading the stream again
    raise AssertionError("unreachable")


def verify_jetstream(url: str, stream: str, keys_dir: Path | None = None,
                     aggregator_pub: Path | None = None, tls: NatsTls | None = None) -> Report:
    servers = servers_of(url)
    try:
        return asyncio.run(_retried(lambda: _verify(servers, stream, keys_dir, aggregator_pub, tls)))
    except (nats.errors.Error, TimeoutError) as exc:
        raise StoreError(f"--jetstream {url}: {str(exc) or type(exc).__name__}") from None


async def _query(servers: Sequence[str], stream: str, flt: EventFilter,
                 tls: NatsTls | None = None) -> list[dict[str, Any]]:
    nc, js, _ = await _open(servers, stream, tls)
    names = Names(stream)
    subject = names.batches if flt.node is None else f"{names.batch_subject(flt.node, 'x').rsplit('.', 1)[0]}.>"
    found: list[tuple[int, int, int, bytes]] = []
    order = 0
    try:
        async for msg in iter_messages(js, stream, subject):
            order += 1
            try:
                opened = open_payload(batch_from_bytes(msg.data))
            except WireError:
                continue
            if opened.body is None or not opened.body:
                continue
            lines = opened.body.split(b"\n")
            for idx, ts_ns, dataset, user, action in index_rows(opened.body):
                if ((flt.dataset is not None and dataset != flt.dataset) or (flt.user is not None and user != flt.user)
                        or (flt.action is not None and action != flt.action)
                        or (flt.since_ns is not None and ts_ns < flt.since_ns)
                        or (flt.until_ns is not None and ts_ns >= flt.until_ns)):
                    continue
                found.append((ts_ns, order, idx, lines[idx]))
    finally:
        await nc.close()
    found.sort(key=lambda row: row[:3])
    if flt.limit is not None:
        found = found[:flt.limit]
    return [orjson.loads(row[3]) for row in found]


def query_jetstream(url: str, stream: str, flt: EventFilter, tls: NatsTls | None = None) -> list[dict[str, Any]]:
    """Stored events matching `flt`, ordered as `query STORE` orders them (time, then ingest order)."""
    servers = servers_of(url)
    try:
        return asyncio.run(_retried(lambda: _query(servers, stream, flt, tls)))
    except (nats.errors.Error, TimeoutError) as exc:
        raise StoreError(f"--jetstream {url}: {str(exc) or type(exc).__name__}") from None
