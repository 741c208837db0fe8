"""A local CA and a server certificate for the stack (TLS from the first start)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.secrets import write_private

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        return cls(directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailstack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "mailstack local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def server_names(hostname: str) -> list[x509.GeneralName]:
    return [x509.DNSName(hostname), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _make_server(hostname: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(server_names(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def server_cert_problem(files: TlsFiles, hostname: str) -> str | None:
    """Why the server certificate must be (re)made, or None when it is fine."""
    if not files.server_cert.exists() or not files.server_key.exists():
        return "missing"
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "has no subjectAltName"
    if hostname not in names.get_values_for_type(x509.DNSName):
        return f"is not valid for {hostname}"
    return None


def ensure_tls(directory: Path, hostname: str) -> TlsFiles:
    """Create the CA once, and a server certificate whenever it is missing, expiring or for another name."""
    files = TlsFiles.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_cert, ca_key = _make_ca()
        write_private(files.ca_key, _pem_key(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    if server_cert_problem(files, hostname):
        cert, key = _make_server(hostname, ca_cert, ca_key)
        write_private(files.server_key, _pem_key(key))
        files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def ensure_named_cert(ca: TlsFiles, directory: Path, stem: str, hostname: str) -> tuple[Path, Path]:
    """A certificate from the stack's CA for another server of the stack (the outside MX), as
    ``directory/<stem>.crt`` and ``.key`` beside a copy of ca.crt; made again when missing, expiring or
    for another name. ``ca`` must exist (ensure_tls)."""
    files = TlsFiles(directory / "ca.crt", ca.ca_key, directory / f"{stem}.crt", directory / f"{stem}.key")
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.ca_cert.read_bytes()
    if not files.ca_cert.exists() or files.ca_cert.read_bytes() != ca_pem:
        files.ca_cert.write_bytes(ca_pem)
        files.server_cert.unlink(missing_ok=True)  # issued by another CA
    if server_cert_problem(files, hostname):
        ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        cert, key = _make_server(hostname, x509.load_pem_x509_certificate(ca_pem), ca_key)
        write_private(files.server_key, _pem_key(key))
        files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files.server_cert, files.server_key
