"""The aggregator's TLS server credentials, reloadable without a restart.

gRPC asks `fetch` for a new certificate configuration at each new handshake; `reload` (on SIGHUP)
reads the certificate, key and CA files again and hands the next handshake the new configuration.
Connections already open keep theirs. Files that do not read as PEM are refused with one logged line
and the running certificates stay.
"""

from __future__ import annotations

import logging
import threading

import grpc

from agent.certs import CertError, load_certificate
from agent.config import TlsConfig

log = logging.getLogger(__name__)


class ReloadError(Exception):
    pass


def _read(tls: TlsConfig) -> grpc.ServerCertificateConfiguration:
    assert tls.ca and tls.cert and tls.key
    try:
        ca, cert, key = tls.ca.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()
    except OSError as exc:
        raise ReloadError(f"{exc.filename}: {exc.strerror}") from None
    for path, data in ((tls.cert, cert), (tls.ca, ca)):
        try:
            load_certificate(data)
        except CertError as exc:
            raise ReloadError(f"{path}: {exc}") from None
    if b"PRIVATE KEY-----" not in key:
        raise ReloadError(f"{tls.key}: not a PEM private key")
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class ServerCertificates:
    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._next: grpc.ServerCertificateConfiguration | None = None
        self._initial = _read(tls)
        self.reloads = 0

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._initial, self._fetch, require_client_authentication=True)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            config, self._next = self._next, None
        return config

    def reload(self) -> bool:
        try:
            config = _read(self.tls)
        except ReloadError as exc:
            log.error("TLS certificate reload refused; the loaded certificates stay", extra={"reason": str(exc)})
            return False
        with self._lock:
            self._next = config
        self.reloads += 1
        log.info("TLS certificates reloaded; new connections use them", extra={"cert": str(self.tls.cert)})
        return True
