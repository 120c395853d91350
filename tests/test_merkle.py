"""The Merkle log: RFC 6962 hashing, the append state, and RFC 9162 proofs.

Known answers come from transparency-dev/merkle (tests/data/merkle/, see its PROVENANCE.md); the
properties check every proof over random trees against a model transcribed from RFC 6962 §2.1.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.merkle import (
    EMPTY_ROOT,
    MerkleError,
    MerkleState,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "merkle" / "rfc6962_vectors.json").read_text())
LEAF_HASHES = [bytes.fromhex(h) for h in VECTORS["leaf_hashes"]]


def h(hex_list: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hex_list]


def model_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1, word for word: split at the largest power of two smaller than n."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + model_mth(leaves[:k]) + model_mth(leaves[k:])).digest()


def distinct_leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- known answers ---------------------------------------------------------------------------


def test_hasher_unit_vectors() -> None:
    empty, leaf_empty, leaf_l123456, children = VECTORS["hasher_unit_vectors"]
    assert EMPTY_ROOT.hex() == empty["want"]
    assert root([]).hex() == empty["want"]
    assert leaf_hash(b"").hex() == leaf_empty["want"]
    assert leaf_hash(leaf_l123456["input_ascii"].encode()).hex() == leaf_l123456["want"]
    assert node_hash(children["left_ascii"].encode(), children["right_ascii"].encode()).hex() == children["want"]


def test_leaf_hashes_of_the_vector_leaves() -> None:
    assert [leaf_hash(bytes.fromhex(x)).hex() for x in VECTORS["leaves_hex"]] == VECTORS["leaf_hashes"]


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_vector_size(size: int) -> None:
    want = VECTORS["roots_by_tree_size"][str(size)]
    assert root(LEAF_HASHES[:size]).hex() == want
    state = MerkleState()
    state.extend(LEAF_HASHES[:size])
    assert state.size == size
    assert state.root().hex() == want


def test_complete_subtree_hashes_of_every_level() -> None:
    for level, hashes in VECTORS["complete_subtree_hashes_by_level"].items():
        width = 1 << int(level)
        assert [root(LEAF_HASHES[i:i + width]).hex() for i in range(0, 8, width)] == hashes


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"], ids=lambda v: v["source_file"])
def test_inclusion_vector_is_generated_and_verifies(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index_0based"], vector["tree_size"]
    assert leaf_hash(bytes.fromhex(vector["leaf_input_hex"])).hex() == vector["leaf_hash"]
    assert inclusion_proof(LEAF_HASHES, index, size) == h(vector["proof"])
    assert verify_inclusion(bytes.fromhex(vector["leaf_hash"]), index, size, h(vector["proof"]),
                            bytes.fromhex(vector["root"]))


@pytest.mark.parametrize("vector", VECTORS["consistency_proofs"], ids=lambda v: v["source_file"])
def test_consistency_vector_is_generated_and_verifies(vector: dict[str, Any]) -> None:
    old, new = vector["size1"], vector["size2"]
    assert consistency_proof(LEAF_HASHES, old, new) == h(vector["proof"])
    assert verify_consistency(old, new, bytes.fromhex(vector["root1"]), bytes.fromhex(vector["root2"]),
                              h(vector["proof"]))


@pytest.mark.parametrize("probe", VECTORS["negative_probes_sample"], ids=lambda v: v["desc"])
def test_every_negative_probe_fails(probe: dict[str, Any]) -> None:
    assert probe["wantErr"] is True
    if "leafIdx" in probe:
        ok = verify_inclusion(bytes.fromhex(probe["leafHash"]), probe["leafIdx"], probe["treeSize"],
                              h(probe["proof"]), bytes.fromhex(probe["root"]))
    else:
        ok = verify_consistency(probe["size1"], probe["size2"], bytes.fromhex(probe["root1"]),
                                bytes.fromhex(probe["root2"]), h(probe["proof"]))
    assert not ok


def test_every_proof_in_trees_of_up_to_8_vector_leaves_verifies() -> None:
    for size in range(1, 9):
        r = root(LEAF_HASHES[:size])
        for index in range(size):
            proof = inclusion_proof(LEAF_HASHES, index, size)
            assert verify_inclusion(LEAF_HASHES[index], index, size, proof, r)
        for old in range(size + 1):
            proof = consistency_proof(LEAF_HASHES, old, size)
            assert verify_consistency(old, size, root(LEAF_HASHES[:old]), r, proof)


# --- edges and argument checks -----------------------------------------------------------------


def test_empty_tree_is_a_prefix_of_every_tree_only_with_the_empty_root() -> None:
    r = root(LEAF_HASHES)
    assert consistency_proof(LEAF_HASHES, 0, 8) == []
    assert verify_consistency(0, 8, EMPTY_ROOT, r, [])
    assert not verify_consistency(0, 8, LEAF_HASHES[0], r, [])
    assert not verify_consistency(0, 8, EMPTY_ROOT, r, [LEAF_HASHES[0]])


def test_equal_sizes_need_equal_roots_and_no_proof() -> None:
    r = root(LEAF_HASHES)
    assert verify_consistency(8, 8, r, r, [])
    assert not verify_consistency(8, 8, r, root(LEAF_HASHES[:7]), [])
    assert not verify_consistency(8, 8, r, r, [r])


def test_a_smaller_new_tree_never_verifies() -> None:
    proof = consistency_proof(LEAF_HASHES, 6, 8)
    assert not verify_consistency(8, 6, root(LEAF_HASHES), root(LEAF_HASHES[:6]), proof)


def test_malformed_verifier_inputs_return_false() -> None:
    r = root(LEAF_HASHES)
    proof = inclusion_proof(LEAF_HASHES, 3, 8)
    assert not verify_inclusion(LEAF_HASHES[3], 3, 8, proof, r[:31])
    assert not verify_inclusion(LEAF_HASHES[3][:31], 3, 8, proof, r)
    assert not verify_inclusion(LEAF_HASHES[3], 3, 8, [*proof[:-1], proof[-1] + b"\x00"], r)
    assert not verify_inclusion(LEAF_HASHES[3], 8, 8, proof, r)
    assert not verify_inclusion(LEAF_HASHES[3], -1, 8, proof, r)
    assert not verify_inclusion(LEAF_HASHES[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_consistency(-1, 8, EMPTY_ROOT, r, [])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (8, 8), (-1, 8), (0, 9)])
def test_inclusion_proof_of_no_such_leaf_is_an_error(index: int, size: int) -> None:
    with pytest.raises(MerkleError):
        inclusion_proof(LEAF_HASHES, index, size)


@pytest.mark.parametrize(("old", "new"), [(5, 4), (-1, 4), (0, 9)])
def test_consistency_proof_of_no_such_trees_is_an_error(old: int, new: int) -> None:
    with pytest.raises(MerkleError):
        consistency_proof(LEAF_HASHES, old, new)


def test_state_round_trips_through_bytes_and_rejects_damage() -> None:
    state = MerkleState()
    state.extend(LEAF_HASHES[:7])
    data = state.to_bytes()
    restored = MerkleState.from_bytes(data)
    assert restored == state and restored.root() == state.root() and restored.size == 7
    restored.append(LEAF_HASHES[7])
    assert restored.root() == root(LEAF_HASHES)
    assert MerkleState.from_bytes(MerkleState().to_bytes()).root() == EMPTY_ROOT
    for bad in (data[:-1], data + b"\x00", b"XXMERKLE" + data[8:], data[:8] + b"\x02" + data[9:], b"LS"):
        with pytest.raises(MerkleError):
            MerkleState.from_bytes(bad)


def test_state_rejects_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(MerkleError):
        MerkleState().append(b"not 32 bytes")


def test_the_module_does_no_io() -> None:
    banned = {"os", "socket", "asyncio", "grpc", "subprocess", "pathlib", "io", "time"}
    tree = ast.parse((Path(__file__).parents[1] / "agent" / "merkle.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & banned


# --- properties over random trees --------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)
salts = st.binary(max_size=8)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=0, max_value=300), salt=salts)
def test_root_matches_the_rfc_model_and_the_append_state(size: int, salt: bytes) -> None:
    leaves = distinct_leaves(size, salt)
    state = MerkleState()
    for i, leaf in enumerate(leaves):
        assert state.append(leaf) == i
    assert root(leaves) == model_mth(leaves) == state.root()
    assert MerkleState.from_bytes(state.to_bytes()).root() == state.root()
    assert len(state.nodes) == bin(size).count("1")


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=sizes, salt=salts)
def test_every_inclusion_proof_verifies_and_any_tampering_fails(data: st.DataObject, size: int,
                                                                salt: bytes) -> None:
    leaves = distinct_leaves(size, salt)
    r = root(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(leaves, index, size)
    assert len(proof) <= size.bit_length()
    assert verify_inclusion(leaves[index], index, size, proof, r)

    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other") if size > 1 else None
    if other is not None:
        assert not verify_inclusion(leaves[index], other, size, proof, r)
        assert not verify_inclusion(leaves[other], index, size, proof, r)
    assert not verify_inclusion(leaves[index], index, size, proof, flip(r, data.draw(st.integers(0, 255))))
    assert not verify_inclusion(leaves[index], index, size, [*proof, r], r)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="at")
        tampered = [*proof]
        tampered[at] = flip(tampered[at], data.draw(st.integers(0, 255), label="bit"))
        assert not verify_inclusion(leaves[index], index, size, tampered, r)
        assert not verify_inclusion(leaves[index], index, size, proof[:-1], r)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), new=sizes, salt=salts)
def test_every_consistency_proof_verifies_and_any_tampering_fails(data: st.DataObject, new: int,
                                                                  salt: bytes) -> None:
    leaves = distinct_leaves(new, salt)
    old = data.draw(st.integers(0, new), label="old")
    old_root, new_root = root(leaves[:old]), root(leaves)
    proof = consistency_proof(leaves, old, new)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if old in (0, new):
        return
    at = data.draw(st.integers(0, len(proof) - 1), label="at")
    tampered = [*proof]
    tampered[at] = flip(tampered[at], data.draw(st.integers(0, 255), label="bit"))
    assert not verify_consistency(old, new, old_root, new_root, tampered)
    assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
    assert not verify_consistency(old, new, old_root, new_root, [*proof, new_root])
    assert not verify_consistency(old, new, new_root, old_root, proof)
    assert not verify_consistency(old, new, flip(old_root, at), new_root, proof)
    assert not verify_consistency(old, new, old_root, flip(new_root, at), proof)
    # A forked history: the same sizes, one leaf changed after the old tree.
    forked = [*leaves[:old], *distinct_leaves(new - old, salt + b"fork")]
    assert not verify_consistency(old, new, old_root, root(forked), proof)
    # A rewritten past: one leaf changed inside the old tree.
    rewritten = [*leaves]
    rewritten[data.draw(st.integers(0, old - 1), label="rewritten")] = leaf_hash(b"forged" + salt)
    assert not verify_consistency(old, new, old_root, root(rewritten), consistency_proof(rewritten, old, new))
    other_old = data.draw(st.integers(1, new - 1).filter(lambda o: o != old), label="other_old") if new > 2 else None
    if other_old is not None:
        assert not verify_consistency(other_old, new, old_root, new_root, proof)
