"""Turning a source's configuration into the values its normalizers take (reads policy and key files)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.config import AgentConfig, SourceConfig
from agent.errors import ConfigError
from agent.normalize import NormalizeOptions
from agent.normalize.k8s_policy import AuditPolicy, parse_policy


def load_policy(path: Path) -> AuditPolicy:
    """Parse a Kubernetes audit Policy file; any problem is a ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy {path}: cannot read: {exc}") from None
    try:
        return parse_policy(text, str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def redaction_secret(config: AgentConfig, node_key: Ed25519PrivateKey) -> bytes:
    """The redaction key: the configured file, else one derived from the node key (HKDF-SHA256)."""
    if config.redact_key is not None:
        try:
            secret = config.redact_key.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"redact_key: {config.redact_key} cannot be read: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(f"redact_key: {config.redact_key} holds {len(secret)} bytes; use at least 16 random "
                              "bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")
        return secret
    raw = node_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"logseal redaction v1").derive(raw)


def normalize_options(source: SourceConfig, secret: bytes) -> NormalizeOptions:
    return NormalizeOptions(
        k8s_policy=load_policy(source.policy) if source.policy is not None else None,
        redact_key=secret,
        redact_paths=tuple(source.redact_paths),
        syslog_timezone=source.timezone,
    )
