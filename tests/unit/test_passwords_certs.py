"""Dovecot-compatible hashes and the local CA."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from mailstack import certs, passwords


@pytest.mark.parametrize("scheme", ["ARGON2ID", "BLF-CRYPT"])
def test_hashes_carry_their_scheme_and_verify(scheme: passwords.Scheme) -> None:
    hashed = passwords.hash_password("correct horse", scheme, "fast")
    assert hashed.startswith("{" + scheme + "}")
    assert passwords.is_dovecot_hash(hashed)
    assert passwords.verify_password("correct horse", hashed) is True
    assert passwords.verify_password("wrong horse", hashed) is False


def test_production_cost_is_the_libraries_recommendation() -> None:
    assert "$m=65536,t=3,p=4$" in passwords.hash_password("x" * 10, "ARGON2ID", "production")


def test_ready_hashes_from_production_are_accepted_prefixed_or_crypt_style() -> None:
    assert passwords.is_dovecot_hash("{SHA512-CRYPT}$6$salt$hash")
    assert passwords.is_dovecot_hash("{MD5-CRYPT}$1$salt$hash")
    assert passwords.is_dovecot_hash("{PLAIN}secret")  # production databases have them; Dovecot verifies them
    assert passwords.is_dovecot_hash("$6$salt$hash") and passwords.is_dovecot_hash("$1$salt$hash")
    assert passwords.is_dovecot_hash("$2y$10$" + "a" * 53)
    assert passwords.verify_password("x", "{SHA512-CRYPT}$6$salt$hash") is None  # only Dovecot can tell
    assert not passwords.is_dovecot_hash("{NOPE}x")
    assert not passwords.is_dovecot_hash("plain text")
    assert not passwords.is_dovecot_hash("$9$unknown")


@pytest.mark.parametrize(("stored", "default", "problem"), [
    ("$6$salt$hash", "SHA512-CRYPT", False),
    ("$6$salt$hash", "CRYPT", False),
    ("$1$salt$hash", "SHA512-CRYPT", False),  # libcrypt verifies any crypt-style hash
    ("$6$salt$hash", "MD5-CRYPT", True),  # PostfixAdmin's docs vs its php_crypt default: the real bug
    ("$2y$10$" + "a" * 53, "MD5-CRYPT", True),
    ("$1$salt$hash", "MD5-CRYPT", False),
    ("{SHA512-CRYPT}$6$salt$hash", "MD5-CRYPT", False),  # a prefix wins over the default
    ("{MD5-CRYPT}$6$salt$hash", "SHA512-CRYPT", True),
    ("{BLF-CRYPT}$2y$10$" + "a" * 53, "ARGON2ID", False),
    ("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA", "ARGON2ID", False),
    ("$argon2i$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA", "ARGON2ID", True),
    ("{SSHA512}c29tZWJhc2U2NA==", "MD5-CRYPT", False),
    ("{PLAIN}secret", "MD5-CRYPT", False),
    ("secret", "PLAIN", False),
    ("{NOPE}x", "PLAIN", True),
])
def test_scheme_problem_decides_as_dovecot_does(stored: str, default: str, problem: bool) -> None:
    found = passwords.scheme_problem(stored, default)
    assert (found is not None) == problem, found
    if problem and passwords.crypt_scheme(stored.rpartition("}")[2]):
        assert passwords.crypt_scheme(stored.rpartition("}")[2]) in passwords.scheme_fix(stored, default)


def test_md5_crypt_default_with_sha512_hash_names_the_fix() -> None:
    problem = passwords.scheme_problem("$6$abcdefgh$xyz", "MD5-CRYPT")
    assert problem == "a SHA512-CRYPT hash ($6$a…), verified as MD5-CRYPT (default_pass_scheme = MD5-CRYPT): " \
                      "every login is refused"
    assert passwords.scheme_fix("$6$abcdefgh$xyz", "MD5-CRYPT").startswith("set default_pass_scheme = SHA512-CRYPT")


def test_ca_and_server_certificate(tmp_path: Path) -> None:
    files = certs.ensure_tls(tmp_path, "mail.example.test")
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example.test", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert files.server_key.stat().st_mode & 0o077 == 0
    assert files.ca_key.stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(files.ca_cert))  # loads as a trust anchor
    assert context.cert_store_stats()["x509_ca"] == 1
    assert server.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=365)


def test_certificate_is_kept_when_fine_and_remade_for_another_hostname(tmp_path: Path) -> None:
    first = certs.ensure_tls(tmp_path, "mail.example.test")
    before = first.server_cert.read_bytes()
    ca_before = first.ca_cert.read_bytes()
    assert certs.ensure_tls(tmp_path, "mail.example.test").server_cert.read_bytes() == before
    again = certs.ensure_tls(tmp_path, "mx.other.test")
    assert again.server_cert.read_bytes() != before
    assert again.ca_cert.read_bytes() == ca_before  # the CA users trust stays
    assert certs.server_cert_problem(again, "mx.other.test") is None
    assert certs.server_cert_problem(again, "mail.example.test") == "is not valid for mail.example.test"
