"""The node's forward-secure signing key on disk: one private key per epoch, the boot counter, erasure.

State folder (`SPOOL/node-keys`, 0700): `epoch-<N>.key` (PKCS#8 PEM, 0600) for epochs N >= 1 (epoch 0
is the enrolled key file, `key` in the config), `state.json` and `boot.json`, each written
temp -> fsync -> rename -> fsync(dir).

An epoch change, on the seal thread between two batches:
  1. the new key is written durably as `epoch-<e+1>.key`;
  2. `state.json` says: epoch e, changing to e+1 with the certifying batch at keys-stream seq s;
  3. the certifying batch (epoch e, `next_key`) is sealed and spooled;
  4. `state.json` says: epoch e+1;
  5. epoch e's key file is overwritten with zeros, fsynced and unlinked; the sealer drops the key.
A crash anywhere is repaired at start: before 2, the stray new key is erased (never certified); between
2 and 4, the keys stream's spooled head tells whether step 3 happened (then the change completes, else
the new key is erased and epoch e goes on); between 4 and 5, every older key still on disk is erased.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.durable import fsync_dir
from agent.errors import KeyFileError
from agent.keychain import KEYS_STREAM, cert_event
from agent.keys import load_private_key, write_private_key
from agent.seal import ChainHead, SealedBatch, Sealer, key_id_of, raw_public

log = logging.getLogger("logseal.keys")

STATE_DIR = "node-keys"


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(value))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise KeyFileError(f"{path} cannot be read ({exc}); the node's key state is damaged") from None
    if not isinstance(value, dict):
        raise KeyFileError(f"{path} is not a JSON object; the node's key state is damaged")
    return value


def erase_file(path: Path) -> bool:
    """Overwrite with zeros, fsync, unlink, fsync the folder. True when the file is gone."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.error("cannot erase a retired private key", extra={"path": str(path), "reason": exc.strerror})
        return False
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, bytes(size), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        path.unlink()
        fsync_dir(path.parent)
    except OSError as exc:
        log.error("a retired private key was zeroed but not unlinked",
                  extra={"path": str(path), "reason": exc.strerror})
        return False
    return True


class EpochKeeper:
    """Owns the current epoch's private key and decides and performs epoch changes."""

    def __init__(self, spool_dir: Path, enrolled_key: Path, epoch_s: int, epoch_batches: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = spool_dir / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.enrolled_key = enrolled_key
        self.epoch_s = epoch_s
        self.epoch_batches = epoch_batches
        self.clock = clock
        self._state_path = self.dir / "state.json"
        self.boot_counter = self._next_boot()
        self.boot_id = os.urandom(16)
        state = _read_json(self._state_path)
        if state is None:
            state = {"epoch": 0, "started": clock()}
            _write_json(self._state_path, state)
        self.epoch = int(state["epoch"])
        self.started = float(state.get("started", clock()))
        self.pending: dict[str, int] | None = state.get("next")
        self.key: Ed25519PrivateKey = load_private_key(self._key_path(self.epoch))
        self.enrolled_public = self._enrolled_public()
        self.batches = 0
        self.changes = 0

    def _enrolled_public(self) -> bytes:
        """The raw epoch-0 public key, kept here (public) since the enrolled private key is erased later."""
        path = self.dir / "enrolled.pub"
        if path.exists():
            return bytes.fromhex(path.read_text().strip())
        if self.epoch != 0:
            return b""
        raw = raw_public(self.key.public_key())
        path.write_text(raw.hex() + "\n")
        return raw

    def _key_path(self, epoch: int) -> Path:
        return self.enrolled_key if epoch == 0 else self.dir / f"epoch-{epoch}.key"

    def _next_boot(self) -> int:
        path = self.dir / "boot.json"
        previous = _read_json(path) or {}
        counter = int(previous.get("boot_counter", 0)) + 1
        _write_json(path, {"boot_counter": counter})  # durable before the first batch of this boot is sealed
        return counter

    def sealer(self, node_id: str, zstd_level: int) -> Sealer:
        return Sealer(node_id, self.key, zstd_level, key_epoch=self.epoch, boot_id=self.boot_id,
                      boot_counter=self.boot_counter)

    def recover(self, keys_head: ChainHead) -> None:
        """Finish or undo an epoch change a crash interrupted (`keys_head`: the keys stream's spooled head)."""
        if self.pending is not None:
            nxt, cert_seq = int(self.pending["epoch"]), int(self.pending["cert_seq"])
            if keys_head.seq >= cert_seq:
                log.warning("completing an epoch change interrupted after its certifying batch was spooled",
                            extra={"epoch": nxt})
                self._commit(nxt, load_private_key(self._key_path(nxt)))
            else:
                log.warning("undoing an epoch change interrupted before its certifying batch was spooled",
                            extra={"epoch": nxt})
                erase_file(self._key_path(nxt))
                self.pending = None
                _write_json(self._state_path, {"epoch": self.epoch, "started": self.started})
        for path in self.dir.glob("epoch-*.key"):
            number = path.stem.partition("-")[2]
            if number.isdigit() and int(number) != self.epoch:
                erase_file(path)  # retired (older) or never certified (newer)
        if self.epoch > 0 and self.enrolled_key.exists():
            self._erase_enrolled()

    def _erase_enrolled(self) -> None:
        if erase_file(self.enrolled_key):
            log.info("the enrolled key (epoch 0) was erased", extra={"path": str(self.enrolled_key)})
        else:
            log.error("the enrolled key could not be erased; whoever reads it can sign for epoch 0",
                      extra={"path": str(self.enrolled_key)})

    def derived_secret(self, derive: Callable[[Ed25519PrivateKey], bytes]) -> bytes:
        """A secret derived once from the enrolled key and kept here, as the enrolled key is erased later."""
        path = self.dir / "redact.secret"
        if path.exists():
            return path.read_bytes()
        if self.epoch != 0:
            raise KeyFileError(f"{path} is missing and the enrolled key is already erased; set redact_key")
        secret = derive(self.key)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.dir)
        return secret

    def due(self) -> bool:
        return self.batches >= self.epoch_batches or self.clock() - self.started >= self.epoch_s

    def after_seal(self, sealer: Sealer, heads: dict[str, ChainHead],
                   spool_append: Callable[[SealedBatch], None], received: str) -> None:
        """Count a sealed batch; when the epoch is due, change it (steps 1-5 above) before the next seal."""
        self.batches += 1
        if not self.due():
            return
        nxt = self.epoch + 1
        new_key = Ed25519PrivateKey.generate()
        path = self._key_path(nxt)
        erase_file(path)  # a stray key of an undone change
        write_private_key(path, new_key)
        fsync_dir(self.dir)
        head = heads.get(KEYS_STREAM, ChainHead(0, bytes(32)))
        cert_seq = head.seq + 1
        _write_json(self._state_path, {"epoch": self.epoch, "started": self.started,
                                       "next": {"epoch": nxt, "cert_seq": cert_seq}})
        ends = {stream: h.seq for stream, h in heads.items() if h.seq > 0}
        ends[KEYS_STREAM] = cert_seq
        event = cert_event(sealer.node_id, nxt, new_key.public_key(), ends, received)
        sealed = sealer.seal_encoded(head, sealer.encode(KEYS_STREAM, cert_seq, [event]),
                                     next_key=new_key.public_key())
        spool_append(sealed)
        heads[KEYS_STREAM] = ChainHead(cert_seq, sealed.batch_hash)
        sealer.switch_key(new_key, nxt)
        self._commit(nxt, new_key)

    def _commit(self, nxt: int, new_key: Ed25519PrivateKey) -> None:
        old = self.epoch
        self.started = self.clock()
        _write_json(self._state_path, {"epoch": nxt, "started": self.started})
        self.key, self.epoch, self.pending, self.batches = new_key, nxt, None, 0
        self.changes += 1
        if old == 0:
            self._erase_enrolled()
        else:
            erase_file(self._key_path(old))
        log.info("key epoch changed", extra={"epoch": nxt, "key_id": key_id_of(new_key.public_key()), "retired": old})
