"""Password hashes Dovecot verifies natively, always stored with their {SCHEME} prefix.

ARGON2ID (argon2-cffi) and BLF-CRYPT (pyca bcrypt) are made here; any other scheme Dovecot knows
(SHA512-CRYPT, MD5-CRYPT, ... from an old production database) is accepted as a ready hash.
"""

from __future__ import annotations

import re
from typing import Literal

import argon2
import bcrypt

Scheme = Literal["ARGON2ID", "BLF-CRYPT"]
Cost = Literal["production", "fast"]

# Schemes Dovecot 2.3 (Debian bookworm, built with libsodium) verifies.
DOVECOT_SCHEMES = frozenset({
    "ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT", "DES-CRYPT",
    "SSHA512", "SSHA256", "SSHA", "SHA512", "SHA256", "SHA", "SMD5", "PBKDF2", "CRAM-MD5", "PLAIN-MD5",
    "LDAP-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN", "CLEARTEXT",
})
_PREFIXED = re.compile(r"^\{(?P<scheme>[A-Z0-9.-]+)\}(?P<hash>.+)$", re.DOTALL)

# production: the libraries' recommended costs (~0.1-0.3 s per login); fast: for disposable test stacks.
_ARGON2 = {
    "production": argon2.PasswordHasher(),
    "fast": argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
}
_BCRYPT_ROUNDS = {"production": 12, "fast": 4}

MIN_PASSWORD_LENGTH = 8


def hash_password(plain: str, scheme: Scheme = "ARGON2ID", cost: Cost = "production") -> str:
    if scheme == "ARGON2ID":
        return "{ARGON2ID}" + _ARGON2[cost].hash(plain)
    if scheme == "BLF-CRYPT":
        return "{BLF-CRYPT}" + bcrypt.hashpw(plain.encode(), bcrypt.gensalt(_BCRYPT_ROUNDS[cost])).decode()
    raise ValueError(f"cannot make {scheme} hashes")


def split_scheme(stored: str) -> tuple[str, str] | None:
    match = _PREFIXED.match(stored)
    return (match["scheme"], match["hash"]) if match else None


def is_dovecot_hash(value: str) -> bool:
    parts = split_scheme(value)
    return parts is not None and parts[0] in DOVECOT_SCHEMES and parts[0] not in ("PLAIN", "CLEARTEXT")


def verify_password(plain: str, stored: str) -> bool | None:
    """True/False where we can check the scheme locally, None where only Dovecot can."""
    parts = split_scheme(stored)
    if parts is None:
        return False
    scheme, digest = parts
    try:
        if scheme == "ARGON2ID":
            return _ARGON2["fast"].verify(digest, plain)
        if scheme == "BLF-CRYPT":
            return bcrypt.checkpw(plain.encode(), digest.encode())
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
    return None
