"""mTLS material: chains that a strict verifier accepts, identity in the SAN, usages, expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from agent.certs import (
    NODE_URI_PREFIX,
    CertError,
    issue_node_cert,
    issue_server_cert,
    load_certificate,
    make_ca,
    node_id_from_cert,
)

NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return make_ca("logseal test CA", NOW)


@pytest.fixture(scope="module")
def node(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return issue_node_cert(*ca, "worker-1", NOW, days=30)


@pytest.fixture(scope="module")
def server(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return issue_server_cert(*ca, ["127.0.0.1", "aggregator.example", "::1"], NOW, days=30)


def store(ca_pem: bytes) -> Store:
    return Store([x509.load_pem_x509_certificate(ca_pem)])


def client_verify(ca_pem: bytes, cert_pem: bytes, at: dt.datetime = NOW) -> list[x509.GeneralName]:
    verified = (PolicyBuilder().store(store(ca_pem)).time(at).build_client_verifier()
                .verify(load_certificate(cert_pem), []))
    return list(verified.subjects or [])


def server_verify(ca_pem: bytes, cert_pem: bytes, name: DNSName | IPAddress, at: dt.datetime = NOW) -> None:
    PolicyBuilder().store(store(ca_pem)).time(at).build_server_verifier(name).verify(load_certificate(cert_pem), [])


def test_the_ca_signs_end_entities_only(ca: tuple[bytes, bytes]) -> None:
    cert = load_certificate(ca[0])
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc


def test_a_node_certificate_chains_to_the_ca_as_a_client(ca: tuple[bytes, bytes], node: tuple[bytes, bytes]) -> None:
    subjects = client_verify(ca[0], node[0])
    assert x509.UniformResourceIdentifier(NODE_URI_PREFIX + "worker-1") in subjects
    assert x509.DNSName("worker-1") in subjects
    cert = load_certificate(node[0])
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_node_id_is_read_from_the_uri_san(node: tuple[bytes, bytes]) -> None:
    assert node_id_from_cert(node[0]) == "worker-1"
    der = load_certificate(node[0]).public_bytes(serialization.Encoding.DER)
    assert node_id_from_cert(der) == "worker-1"
    assert node_id_from_cert(load_certificate(node[0])) == "worker-1"


def test_a_server_certificate_serves_its_sans_only(ca: tuple[bytes, bytes], server: tuple[bytes, bytes]) -> None:
    server_verify(ca[0], server[0], IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_verify(ca[0], server[0], IPAddress(ipaddress.ip_address("::1")))
    server_verify(ca[0], server[0], DNSName("aggregator.example"))
    with pytest.raises(VerificationError):
        server_verify(ca[0], server[0], DNSName("evil.example"))
    assert node_id_from_cert(server[0]) is None


def test_usages_are_not_interchangeable(ca: tuple[bytes, bytes], node: tuple[bytes, bytes],
                                        server: tuple[bytes, bytes]) -> None:
    with pytest.raises(VerificationError):
        server_verify(ca[0], node[0], DNSName("worker-1"))
    with pytest.raises(VerificationError):
        client_verify(ca[0], server[0])


def test_an_expired_or_not_yet_valid_certificate_is_refused(ca: tuple[bytes, bytes],
                                                            node: tuple[bytes, bytes]) -> None:
    cert = load_certificate(node[0])
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    client_verify(ca[0], node[0], NOW + dt.timedelta(days=29))
    with pytest.raises(VerificationError):
        client_verify(ca[0], node[0], NOW + dt.timedelta(days=31))
    with pytest.raises(VerificationError):
        client_verify(ca[0], node[0], NOW - dt.timedelta(hours=1))


def test_a_certificate_from_a_foreign_ca_is_refused(node: tuple[bytes, bytes]) -> None:
    foreign_ca = make_ca("someone else's CA", NOW)
    with pytest.raises(VerificationError):
        client_verify(foreign_ca[0], node[0])
    impostor = issue_node_cert(*foreign_ca, "worker-1", NOW)
    assert node_id_from_cert(impostor[0]) == "worker-1"  # the name alone proves nothing...
    with pytest.raises(VerificationError):
        client_verify(make_ca("logseal test CA", NOW)[0], impostor[0])  # ...only the chain does


def test_leaf_validity_never_outlives_the_ca() -> None:
    short_ca = make_ca("short CA", NOW, days=10)
    cert = load_certificate(issue_node_cert(*short_ca, "worker-2", NOW, days=365)[0])
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)


def test_the_key_belongs_to_the_certificate(node: tuple[bytes, bytes]) -> None:
    key = serialization.load_pem_private_key(node[1], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == load_certificate(node[0]).public_key()


@pytest.mark.parametrize("node_id", ["", "a b", "node/1", "node:1", "-lead", "x" * 64, "ünïcode"])
def test_node_ids_that_are_not_dns_names_are_refused(ca: tuple[bytes, bytes], node_id: str) -> None:
    with pytest.raises(CertError):
        issue_node_cert(*ca, node_id, NOW)


def test_bad_arguments_are_refused(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(CertError, match="timezone-aware"):
        make_ca("naive", dt.datetime(2026, 1, 1))
    with pytest.raises(CertError, match="SAN"):
        issue_server_cert(*ca, [], NOW)
    with pytest.raises(CertError):
        issue_server_cert(*ca, ["not a name"], NOW)
    other_ca = make_ca("other", NOW)
    with pytest.raises(CertError, match="does not belong"):
        issue_node_cert(ca[0], other_ca[1], "worker-1", NOW)
    with pytest.raises(CertError):
        load_certificate(b"garbage")


def _cert_with_sans(ca: tuple[bytes, bytes], sans: list[x509.GeneralName] | None) -> x509.Certificate:
    ca_cert = load_certificate(ca[0])
    ca_key = serialization.load_pem_private_key(ca[1], password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(ca_cert.subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def test_no_or_ambiguous_node_identity_reads_as_none(ca: tuple[bytes, bytes]) -> None:
    uri = x509.UniformResourceIdentifier
    assert node_id_from_cert(_cert_with_sans(ca, None)) is None
    assert node_id_from_cert(_cert_with_sans(ca, [x509.DNSName("worker-1")])) is None
    assert node_id_from_cert(_cert_with_sans(ca, [uri("https://worker-1/")])) is None
    assert node_id_from_cert(_cert_with_sans(ca, [uri(NODE_URI_PREFIX + "a"), uri(NODE_URI_PREFIX + "b")])) is None
    assert node_id_from_cert(_cert_with_sans(ca, [uri(NODE_URI_PREFIX)])) is None
