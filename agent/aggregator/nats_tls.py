"""TLS to the NATS cluster of a JetStream store: the cluster's CA, and the aggregator's client
certificate when the servers verify clients (`tls { verify: true }` in nats-server's config)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError


@dataclass(frozen=True)
class NatsTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that checks the servers' certificates against `ca` (never the system CAs)."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
            if self.cert is not None:
                context.load_cert_chain(str(self.cert), str(self.key) if self.key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"NATS TLS: cannot load {self.ca}, {self.cert}, {self.key}: {exc}") from None
        return context


def nats_tls(ca: Path | None, cert: Path | None, key: Path | None, where: str) -> NatsTls | None:
    """The settings as given, checked: a CA is needed for TLS, and a certificate comes with its key."""
    if ca is None:
        if cert is not None or key is not None:
            raise ConfigError(f"{where}: a NATS client certificate needs the cluster's CA too (tls_ca)")
        return None
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: give both tls_cert and tls_key (the client certificate and its key)")
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}.{name}: file {path} does not exist")
    return NatsTls(ca, cert, key)
