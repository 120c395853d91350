"""The store's Merkle log and its signed checkpoints (what the aggregator keeps, signs and witnesses)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from agent import merkle
from agent.aggregator.checkpoints import Checkpointer, witness_file_name
from agent.aggregator.store import Store, read_checkpoints
from agent.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from agent.config import load_aggregator_config
from agent.errors import ConfigError, StoreError
from agent.keys import load_public_key
from tests.aggregator.storekit import ORIGIN, Kit


def test_every_stored_batch_is_a_leaf_in_ingest_order(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(2, "node-1")
    kit.add(1, "node-2", "audit")
    kit.add(2, "node-1")
    leaves = [merkle.leaf_hash(b.batch_hash) for b in kit.sent]
    assert kit.store.tree.size == 5
    assert kit.store.tree.root() == merkle.root(leaves)
    assert kit.store.leaf_hashes() == leaves  # leaf index = batches.id - 1
    kit.close()


def test_the_merkle_state_survives_a_restart_and_is_rebuilt_for_an_older_store(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(3)
    before = kit.store.tree.copy()
    kit.close()
    reopened = Store(tmp_path / "store")
    assert reopened.tree == before
    reopened.db.execute("DELETE FROM merkle")  # as a store written before the Merkle log existed
    reopened.close()
    rebuilt = Store(tmp_path / "store")
    assert rebuilt.tree == before
    rebuilt.close()


def test_a_merkle_state_that_disagrees_with_the_index_stops_the_store(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(3)
    kit.store.db.execute("UPDATE merkle SET size = 2")
    kit.close()
    with pytest.raises(StoreError, match="Merkle state covers 2 .* the index holds 3"):
        Store(tmp_path / "store")


def test_checkpoints_every_n_batches_and_at_shutdown_never_twice_for_one_size(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    witness.mkdir()
    kit = Kit(tmp_path / "store", witness=witness, every=2)
    kit.add(5)
    kit.checkpoint()  # shutdown
    kit.checkpoint()  # nothing new: nothing signed
    stored = read_checkpoints(kit.store.db)
    assert [c.size for c in stored] == [2, 4, 5]
    public = kit.aggregator_key.public_key()
    leaves = kit.store.leaf_hashes()
    for c in stored:
        cp = open_checkpoint(c.note, ORIGIN, public)
        assert (cp.origin, cp.size, cp.root) == (ORIGIN, c.size, merkle.root(leaves[:c.size]))
        assert cp.time_ns == c.time_ns
    assert sorted(p.name for p in witness.iterdir()) == [witness_file_name(s) for s in (2, 4, 5)]
    assert (witness / witness_file_name(4)).read_text() == stored[1].note
    kit.close()


def test_the_interval_signs_only_when_batches_arrived(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    start = kit.now_ns
    kit.checkpointer.tick(start + 61 * 10**9)
    assert kit.checkpointer.last is None
    kit.add(1)
    kit.checkpointer.tick(start + 62 * 10**9)
    assert kit.checkpointer.last is not None and kit.checkpointer.last.size == 1
    kit.add(1)
    kit.checkpointer.tick(start + 63 * 10**9)  # the interval has not passed again
    assert kit.checkpointer.last.size == 1
    kit.close()


def test_a_tree_that_does_not_extend_the_last_checkpoint_is_never_signed(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(2)
    kit.checkpoint()
    kit.add(1)
    forged = merkle.MerkleState()
    forged.extend([merkle.leaf_hash(bytes([i]) * 32) for i in range(3)])
    kit.store.db.execute("UPDATE merkle SET state = ?", (forged.to_bytes(),))
    kit.close()
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="does not extend its checkpoint of 2"):
        Checkpointer(store, kit.aggregator_key, ORIGIN)
    store.close()


def test_a_store_smaller_than_its_last_checkpoint_gets_no_signature(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store")
    kit.add(2)
    kit.checkpoint()
    bigger = Checkpoint(ORIGIN, 5, bytes(32))
    kit.store.add_checkpoint(5, bytes(32), sign_checkpoint(bigger, ORIGIN, kit.aggregator_key), 1,
                             merkle.MerkleState().to_bytes())
    kit.close()
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="rollback: the store holds 2 batches but its checkpoint signed 5"):
        Checkpointer(store, kit.aggregator_key, ORIGIN)
    store.close()


def test_the_aggregator_key_is_created_once_and_its_public_half_published(tmp_path: Path) -> None:
    (tmp_path / "trusted").mkdir()
    config_path = tmp_path / "aggregator.toml"
    config_path.write_text('listen = "127.0.0.1:0"\nstore_dir = "store"\ntrusted_keys_dir = "trusted"\n')
    config = load_aggregator_config(config_path)
    store = Store(config.store_dir)
    first = Checkpointer.from_config(store, config, 0)
    key_file = config.store_dir / "aggregator.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_public_key(config.store_dir / "aggregator.pub") == first.key.public_key()
    assert first.origin.startswith("logseal/")
    again = Checkpointer.from_config(store, config, 0)
    assert again.key.public_key() == first.key.public_key() and again.origin == first.origin
    config_path.write_text(config_path.read_text() + 'origin = "other.example/log"\n')
    with pytest.raises(ConfigError, match="a log's origin never changes"):
        Checkpointer.from_config(store, load_aggregator_config(config_path), 0)
    store.close()


def test_checkpoint_config_is_validated(tmp_path: Path) -> None:
    (tmp_path / "trusted").mkdir()
    config_path = tmp_path / "aggregator.toml"
    base = 'listen = "127.0.0.1:0"\nstore_dir = "store"\ntrusted_keys_dir = "trusted"\n'
    for extra, message in (('origin = "has space"\n', "origin:"), ("checkpoint_every = 0\n", "checkpoint_every"),
                           ('aggregator_key = "nope.key"\n', "aggregator_key")):
        config_path.write_text(base + extra)
        with pytest.raises(ConfigError, match=message):
            load_aggregator_config(config_path)


def test_checkpoint_rows_are_committed_with_the_index(tmp_path: Path) -> None:
    kit = Kit(tmp_path / "store", every=1)
    kit.add(2)
    kit.close()
    db = sqlite3.connect(tmp_path / "store" / "index.db")
    assert [r[0] for r in db.execute("SELECT size FROM checkpoints ORDER BY id")] == [1, 2]
    db.close()
