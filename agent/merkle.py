"""RFC 6962 Merkle tree: hashing, an O(log n) append state, inclusion and consistency proofs.

This is a public API: auditors' own scripts may import it. Everything works on 32-byte SHA-256
hashes; the aggregator's leaves are `leaf_hash(batch_hash)` of every stored batch, in ingest order.

Invariants:
- `leaf_hash(d) = SHA-256(0x00 || d)`, `node_hash(l, r) = SHA-256(0x01 || l || r)`; the root of the
  empty tree is SHA-256 of the empty string (RFC 6962 §2.1).
- `root(hashes)` is MTH over leaf hashes: a tree of n > 1 leaves splits at k, the largest power of
  two below n. `MerkleState` holds only the right-edge frontier (one subtree root per set bit of
  its size, largest first), so appending is O(log n) and its `root()` equals `root(all leaves)`.
- Proofs are generated per RFC 6962 §2.1.1/§2.1.2 (PATH and PROOF) from a stored list of leaf
  hashes (O(n) work each) and verified per RFC 9162 §2.1.3.2/§2.1.4.2 (O(log n)). Verifiers return
  False on any malformed input (wrong hash length, index out of range, surplus or missing proof
  hashes); they never raise.

No I/O, no clock: values in, values out.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

from agent.errors import LogsealError

__all__ = [
    "EMPTY_ROOT", "HASH_SIZE", "MerkleError", "MerkleState", "consistency_proof", "inclusion_proof", "leaf_hash",
    "node_hash", "root", "verify_consistency", "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_STATE_MAGIC = b"LSMERKLE"
_STATE_VERSION = 1
_STATE_HEAD = struct.Struct(">8sBQ")


class MerkleError(LogsealError, ValueError):
    """A proof or state was asked for with arguments that name no valid tree (e.g. index >= size)."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of hashes[lo:hi], level by level (an odd last node moves up unchanged, as in MTH)."""
    if hi <= lo:
        return EMPTY_ROOT
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash (RFC 6962 §2.1) of a list of leaf hashes."""
    return _mth(leaves, 0, len(leaves))


def _check_size(leaf_hashes: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(leaf_hashes):
        raise MerkleError(f"tree size {size} is outside 0..{len(leaf_hashes)} (the leaves given)")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Audit path (RFC 6962 §2.1.1 PATH) for leaf `index` in the tree of the first `size` leaves."""
    _check_size(leaf_hashes, size)
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    # Walk from the root down to the leaf, then emit siblings leaf-first.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaf_hashes, lo, lo + k))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof (RFC 6962 §2.1.2 PROOF) that the tree of `old_size` leaves is a prefix of
    the tree of `new_size` leaves. Empty when old_size is 0 or equals new_size."""
    _check_size(leaf_hashes, new_size)
    if not 0 <= old_size <= new_size:
        raise MerkleError(f"old size {old_size} is outside 0..{new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], complete), unrolled; the nodes are emitted deepest first.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_mth(leaf_hashes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(_mth(leaf_hashes, lo, hi))
    proof.reverse()
    return proof


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show `leaf_hash` at `index` in the tree of `size` with `root`?"""
    if not (_is_hash(leaf_hash) and _is_hash(root) and all(_is_hash(p) for p in proof)):
        return False
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (`old_size`, `old_root`) a prefix of (`new_size`, `new_root`)?

    Equal sizes need an empty proof and equal roots; an empty old tree needs an empty proof and the
    empty-tree root, and is a prefix of every tree.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and all(_is_hash(p) for p in proof)):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class MerkleState:
    """The right edge of a growing tree (its "compact range"): O(log n) memory and append.

    `nodes` are the roots of the perfect subtrees that make up the tree, left to right, one per set
    bit of `size` from the highest. Persist with `to_bytes()`; restore with `from_bytes()`.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> int:
        """Add one leaf hash; return its leaf index."""
        if not _is_hash(leaf):
            raise MerkleError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
        index = self._size
        node, s = leaf, index
        while s & 1:
            node = node_hash(self._nodes.pop(), node)
            s >>= 1
        self._nodes.append(node)
        self._size = index + 1
        return index

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        r = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            r = node_hash(node, r)
        return r

    def copy(self) -> MerkleState:
        clone = MerkleState()
        clone._size = self._size
        clone._nodes = list(self._nodes)
        return clone

    def to_bytes(self) -> bytes:
        """`LSMERKLE`, version u8, size u64 big-endian, then the frontier hashes."""
        return _STATE_HEAD.pack(_STATE_MAGIC, _STATE_VERSION, self._size) + b"".join(self._nodes)

    @classmethod
    def from_bytes(cls, data: bytes) -> MerkleState:
        if len(data) < _STATE_HEAD.size:
            raise MerkleError(f"Merkle state is {len(data)} bytes, shorter than its header")
        magic, version, size = _STATE_HEAD.unpack_from(data)
        if magic != _STATE_MAGIC:
            raise MerkleError("not a Merkle state (bad magic)")
        if version != _STATE_VERSION:
            raise MerkleError(f"Merkle state version {version}, this build reads {_STATE_VERSION}")
        body = data[_STATE_HEAD.size:]
        count = size.bit_count()
        if len(body) != count * HASH_SIZE:
            raise MerkleError(f"Merkle state of size {size} needs {count} hashes, has {len(body)} bytes")
        state = cls()
        state._size = size
        state._nodes = [body[i:i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MerkleState) and (self._size, self._nodes) == (other._size, other._nodes)

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._nodes)))

    def __repr__(self) -> str:
        return f"MerkleState(size={self._size}, root={self.root().hex()})"
