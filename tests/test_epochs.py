"""The node's epoch keys on disk (agent/epochs.py): changes, erasure, boots, and a crash at each step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.epochs import EpochKeeper, erase_file
from agent.keychain import KEYS_STREAM
from agent.keys import load_private_key, write_keypair
from agent.seal import GENESIS, ChainHead, SealedBatch, key_id_of
from agent.spool import Spool
from agent.wire import batch_from_bytes, batch_to_bytes

NOW = "2026-11-26T10:00:00.000000Z"


class Crash(Exception):
    """Stands for the process dying at this point."""


@pytest.fixture
def enrolled(tmp_path: Path) -> Path:
    key, _ = write_keypair("node-1", tmp_path / "keys")
    return key


def keeper(tmp_path: Path, enrolled: Path, epoch_batches: int = 2) -> EpochKeeper:
    return EpochKeeper(tmp_path / "spool", enrolled, epoch_s=86_400, epoch_batches=epoch_batches)


def state(tmp_path: Path) -> dict[str, object]:
    return dict(json.loads((tmp_path / "spool" / "node-keys" / "state.json").read_text()))


def key_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "spool" / "node-keys").glob("*.key"))


def test_an_epoch_changes_after_its_batches_and_the_old_key_is_erased(tmp_path: Path, enrolled: Path) -> None:
    k = keeper(tmp_path, enrolled)
    spool = Spool(tmp_path / "spool")
    spool.recover(KEYS_STREAM)
    sealer = k.sealer("node-1", 3)
    heads: dict[str, ChainHead] = {"auth": ChainHead(7, bytes(32))}
    spooled: list[SealedBatch] = []

    def append(batch: SealedBatch) -> None:
        spool.append(KEYS_STREAM, batch.header.seq, batch.batch_hash, {}, batch_to_bytes(batch))
        spooled.append(batch)

    enrolled_id = sealer.key_id
    k.after_seal(sealer, heads, append, NOW)
    assert (k.epoch, spooled) == (0, [])
    k.after_seal(sealer, heads, append, NOW)
    (cert,) = spooled
    assert (cert.header.key_epoch, cert.header.key_id, cert.header.stream_id) == (0, enrolled_id, KEYS_STREAM)
    assert (k.epoch, sealer.key_epoch, state(tmp_path)["epoch"]) == (1, 1, 1)
    assert key_id_of(k.key.public_key()) == sealer.key_id != enrolled_id
    assert cert.header.next_key and heads[KEYS_STREAM].seq == 1
    assert not enrolled.exists() and key_files(tmp_path) == ["epoch-1.key"]
    k.after_seal(sealer, heads, append, NOW)
    k.after_seal(sealer, heads, append, NOW)
    assert k.epoch == 2 and key_files(tmp_path) == ["epoch-2.key"] and spooled[1].header.key_epoch == 1


def test_erasing_overwrites_the_key_bytes_before_unlinking(tmp_path: Path, enrolled: Path) -> None:
    other_name = tmp_path / "same-inode"
    os.link(enrolled, other_name)  # sees the file's blocks after the unlink
    size = enrolled.stat().st_size
    assert erase_file(enrolled)
    assert not enrolled.exists() and other_name.read_bytes() == bytes(size)


def test_the_boot_counter_rises_at_each_start_and_the_boot_id_is_new(tmp_path: Path, enrolled: Path) -> None:
    first, second = keeper(tmp_path, enrolled), keeper(tmp_path, enrolled)
    assert (first.boot_counter, second.boot_counter) == (1, 2)
    assert first.boot_id != second.boot_id and len(first.boot_id) == 16
    sealer = second.sealer("node-1", 3)
    header = sealer.seal("auth", GENESIS, []).header
    assert (header.boot_counter, header.boot_id) == (2, second.boot_id)


def crash_during_change(tmp_path: Path, enrolled: Path, spooled: bool) -> ChainHead:
    """Run an epoch change that dies right after (or right before) spooling its certifying batch."""
    k = keeper(tmp_path, enrolled, epoch_batches=1)
    sealer = k.sealer("node-1", 3)
    heads: dict[str, ChainHead] = {}
    written: list[SealedBatch] = []

    def append(batch: SealedBatch) -> None:
        if spooled:
            written.append(batch)
        raise Crash

    with pytest.raises(Crash):
        k.after_seal(sealer, heads, append, NOW)
    assert state(tmp_path)["next"] == {"epoch": 1, "cert_seq": 1}
    assert key_files(tmp_path) == ["epoch-1.key"] and enrolled.exists()
    return ChainHead(1, written[0].batch_hash) if written else GENESIS


def test_a_crash_before_the_certifying_batch_is_spooled_undoes_the_change(tmp_path: Path, enrolled: Path) -> None:
    head = crash_during_change(tmp_path, enrolled, spooled=False)
    k = keeper(tmp_path, enrolled)
    k.recover(head)
    assert k.epoch == 0 and state(tmp_path) == {"epoch": 0, "started": state(tmp_path)["started"]}
    assert key_files(tmp_path) == [] and enrolled.exists()  # the never-certified key is gone
    assert key_id_of(k.key.public_key()) == key_id_of(load_private_key(enrolled).public_key())


def test_a_crash_after_the_certifying_batch_is_spooled_completes_the_change(tmp_path: Path, enrolled: Path) -> None:
    head = crash_during_change(tmp_path, enrolled, spooled=True)
    k = keeper(tmp_path, enrolled)
    k.recover(head)
    assert k.epoch == 1 and state(tmp_path)["epoch"] == 1 and "next" not in state(tmp_path)
    assert key_files(tmp_path) == ["epoch-1.key"] and not enrolled.exists()


def test_a_crash_before_the_change_is_recorded_leaves_no_stray_key(tmp_path: Path, enrolled: Path) -> None:
    keeper(tmp_path, enrolled)
    stray = tmp_path / "spool" / "node-keys" / "epoch-1.key"
    stray.write_bytes(b"half-written")  # step 1 done, step 2 not
    k = keeper(tmp_path, enrolled)
    k.recover(GENESIS)
    assert k.epoch == 0 and not stray.exists()


def test_a_crash_before_the_old_key_is_erased_erases_it_at_start(tmp_path: Path, enrolled: Path) -> None:
    k = keeper(tmp_path, enrolled, epoch_batches=1)
    sealer = k.sealer("node-1", 3)
    k.after_seal(sealer, {}, lambda batch: None, NOW)
    k.after_seal(sealer, {}, lambda batch: None, NOW)
    assert k.epoch == 2
    leftover = tmp_path / "spool" / "node-keys" / "epoch-1.key"
    leftover.write_bytes(b"as if the erase had not happened")
    again = keeper(tmp_path, enrolled)
    again.recover(ChainHead(2, bytes(32)))
    assert again.epoch == 2 and not leftover.exists() and key_files(tmp_path) == ["epoch-2.key"]


def test_a_full_spool_never_drops_a_certifying_batch(tmp_path: Path, enrolled: Path) -> None:
    k = keeper(tmp_path, enrolled, epoch_batches=1)
    spool = Spool(tmp_path / "spool", max_bytes=4000, when_full="drop_oldest")
    spool.recover(KEYS_STREAM)
    spool.recover("auth")
    sealer = k.sealer("node-1", 3)
    heads: dict[str, ChainHead] = {}

    def append(batch: SealedBatch) -> None:
        spool.append(batch.header.stream_id, batch.header.seq, batch.batch_hash, {}, batch_to_bytes(batch))

    k.after_seal(sealer, heads, append, NOW)  # the certifying batch is the oldest in the spool
    head = GENESIS
    for _ in range(6):
        batch = sealer.seal("auth", head, [{"@timestamp": NOW, "event": {}, "message": os.urandom(400).hex()}])
        append(batch)
        head = ChainHead(batch.header.seq, batch.batch_hash)
    assert spool.take_dropped("auth")  # room was made by dropping auth payloads ...
    cert = spool.read((KEYS_STREAM, 1))
    assert cert is not None
    assert not batch_from_bytes(cert).payload_dropped  # ... never the certificate's
