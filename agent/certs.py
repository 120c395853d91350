"""X.509 material for mTLS: a private CA, node client certificates, aggregator server certificates.

Invariants:
- A node's identity is the URI SAN `logseal://node/<node id>` of its certificate (a DNS SAN
  `<node id>` is added for tools that only read DNS names). `node_id_from_cert` reads only the URI
  SAN, and answers None when there is none or more than one: never a guess.
- Node certificates are for TLS clients only (EKU clientAuth), server certificates for TLS
  servers only (EKU serverAuth); neither can sign certificates. The CA may sign only end
  entities (path length 0).
- Keys are ECDSA P-256 (what every gRPC TLS stack accepts), returned as unencrypted PKCS#8 PEM;
  certificates as PEM. Validity starts `NOT_BEFORE_SKEW` before `now` to absorb clock skew.

No I/O and no clock: `now` is passed in (timezone-aware); writing the files is the caller's job.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import LogsealError

NODE_URI_PREFIX = "logseal://node/"
NOT_BEFORE_SKEW = dt.timedelta(minutes=5)
CA_DAYS = 3650
LEAF_DAYS = 365
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class CertError(LogsealError, ValueError):
    """Certificate material that cannot be made or read as asked."""


def _check_now(now: dt.datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise CertError("`now` must be a timezone-aware datetime")


def _check_dns(name: str, what: str) -> None:
    if len(name) > 253 or not _DNS_RE.fullmatch(name):
        raise CertError(f"{what} {name!r} is not a DNS name (letters, digits, '-' and '.')")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes | str) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise CertError(f"not an X.509 certificate: {exc}") from None


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = load_certificate(ca_cert_pem)
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"CA key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError("CA key: expected an ECDSA key")
    if cert.public_key() != key.public_key():
        raise CertError("CA key does not belong to the CA certificate")
    return cert, key


def make_ca(common_name: str, now: dt.datetime, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A self-signed CA that signs end-entity certificates only: (cert PEM, key PEM)."""
    _check_now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - NOT_BEFORE_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _issue(ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, sans: list[x509.GeneralName],
           usage: x509.ObjectIdentifier, now: dt.datetime, days: int) -> tuple[bytes, bytes]:
    _check_now(now)
    if days < 1:
        raise CertError(f"validity must be at least 1 day, got {days}")
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - NOT_BEFORE_SKEW).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def issue_node_cert(ca_cert_pem: bytes, ca_key_pem: bytes, node_id: str, now: dt.datetime,
                    days: int = LEAF_DAYS) -> tuple[bytes, bytes]:
    """A TLS client certificate naming `node_id` (URI and DNS SAN): (cert PEM, key PEM)."""
    _check_dns(node_id, "node id")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id),
                                    x509.DNSName(node_id)]
    return _issue(ca_cert_pem, ca_key_pem, node_id, sans, ExtendedKeyUsageOID.CLIENT_AUTH, now, days)


def issue_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, sans: Sequence[str], now: dt.datetime,
                      days: int = LEAF_DAYS) -> tuple[bytes, bytes]:
    """A TLS server certificate for the aggregator; each SAN is an IP address or a DNS name."""
    if not sans:
        raise CertError("a server certificate needs at least one SAN (an IP address or a DNS name)")
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            _check_dns(san, "SAN")
            names.append(x509.DNSName(san))
    return _issue(ca_cert_pem, ca_key_pem, sans[0], names, ExtendedKeyUsageOID.SERVER_AUTH, now, days)


def node_id_from_cert(cert_pem_or_der: bytes | str | x509.Certificate) -> str | None:
    """The node id of a certificate's `logseal://node/<id>` URI SAN; None if none or ambiguous."""
    cert = cert_pem_or_der if isinstance(cert_pem_or_der, x509.Certificate) else load_certificate(cert_pem_or_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = {uri[len(NODE_URI_PREFIX):] for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
           if uri.startswith(NODE_URI_PREFIX)}
    if len(ids) != 1:
        return None
    node_id = ids.pop()
    return node_id if node_id and _DNS_RE.fullmatch(node_id) else None
