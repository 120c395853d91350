"""Ed25519 node and aggregator keys: creation (0600), loading with permission checks, key ids."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import KeyFileError
from agent.seal import key_id_of

__all__ = ["key_id_of", "load_or_create_key", "load_private_key", "load_public_key", "load_trusted_keys",
           "public_pem", "write_keypair", "write_private_key"]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_private(path: Path, private: Ed25519PrivateKey) -> None:
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: an existing key is never replaced; 0o600 from the first byte (no chmod window).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def write_private_key(path: Path, private: Ed25519PrivateKey) -> None:
    """Write a new private key file: 0600 from the first byte, fsynced, never over an existing file."""
    _write_private(path, private)


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The Ed25519 key at `path`, created (0600, fsynced) when there is none; (key, created)."""
    if path.exists():
        return load_private_key(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    try:
        _write_private(path, private)
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be created: {exc.strerror}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return private, True


def write_keypair(node_id: str, out_dir: Path) -> tuple[Path, Path]:
    """Create `<node_id>.key` (PKCS#8 PEM, mode 0600, never overwritten) and `<node_id>.pub`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / f"{node_id}.key"
    pub_path = out_dir / f"{node_id}.pub"
    private = Ed25519PrivateKey.generate()
    _write_private(key_path, private)
    pub_path.write_bytes(public_pem(private.public_key()))
    return key_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a node key, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create it with `logseal keygen`") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(mode):04o}; it must be private: chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {path} is not a PEM Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"public key {path} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"public key {path} is not a PEM Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Enrolled node keys: `<node_id>.pub` files in a directory, by node id."""
    if not directory.is_dir():
        raise KeyFileError(f"trusted_keys_dir {directory} is not a directory")
    return {p.stem: load_public_key(p) for p in sorted(directory.glob("*.pub"))}
