"""Password hashes Dovecot verifies natively.

The orchestrator makes ARGON2ID (argon2-cffi) and BLF-CRYPT (pyca bcrypt) hashes, always stored with their
{SCHEME} prefix. Production databases also hold other schemes, and unprefixed hashes (`$1$…`, `$6$…`), which
Dovecot verifies with the passdb's `default_pass_scheme`: `scheme_problem` tells, as Dovecot would decide,
whether a stored hash can be verified by the scheme Dovecot will use for it.
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


# What an unprefixed crypt(3)-style hash says about its own scheme, by its leading "$id$".
_CRYPT_IDS = (
    ("$argon2id$", "ARGON2ID"), ("$argon2i$", "ARGON2I"), ("$1$", "MD5-CRYPT"), ("$5$", "SHA256-CRYPT"),
    ("$6$", "SHA512-CRYPT"), ("$2a$", "BLF-CRYPT"), ("$2b$", "BLF-CRYPT"), ("$2y$", "BLF-CRYPT"),
    ("$y$", "CRYPT"), ("$gy$", "CRYPT"), ("$7$", "CRYPT"),
)
_DES_CRYPT = re.compile(r"^[./0-9A-Za-z]{13}$")
# Which hashes each verifier accepts (Dovecot 2.3's password-scheme*.c): the CRYPT family calls libcrypt
# (Debian's libxcrypt: MD5, SHA-256/512, bcrypt, yescrypt and DES hashes alike); MD5-CRYPT and BLF-CRYPT use
# Dovecot's own code, which only understands its own format; the Argon2 ones libsodium's.
_LIBCRYPT = ("$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$", "$y$", "$gy$", "$7$")
_LIBCRYPT_SCHEMES = ("CRYPT", "DES-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT")
_ACCEPTS = {
    **{scheme: _LIBCRYPT for scheme in _LIBCRYPT_SCHEMES},
    "MD5-CRYPT": ("$1$",), "BLF-CRYPT": ("$2a$", "$2b$", "$2y$"),
    "ARGON2I": ("$argon2i$",), "ARGON2ID": ("$argon2id$",),
}


def crypt_scheme(value: str) -> str | None:
    """The scheme an unprefixed hash is in, from its own format (None: not a crypt-style hash)."""
    for marker, scheme in _CRYPT_IDS:
        if value.startswith(marker):
            return scheme
    return "DES-CRYPT" if _DES_CRYPT.match(value) else None


def is_dovecot_hash(value: str) -> bool:
    """A {SCHEME}-prefixed hash of a scheme Dovecot knows ({PLAIN} too), or an unprefixed crypt-style hash."""
    parts = split_scheme(value)
    if parts is not None:
        return parts[0] in DOVECOT_SCHEMES
    return crypt_scheme(value) is not None


def effective_scheme(stored: str, default_scheme: str) -> str:
    """The scheme Dovecot verifies `stored` with: its prefix, else the passdb's default_pass_scheme."""
    parts = split_scheme(stored)
    return parts[0] if parts else default_scheme.upper()


def scheme_problem(stored: str, default_scheme: str) -> str | None:
    """Why Dovecot cannot verify any password against `stored`, or None when it can (as far as a hash's
    form tells: schemes without a telling form, e.g. SSHA512, are taken as they come)."""
    parts = split_scheme(stored)
    scheme, digest = parts if parts else (default_scheme.upper(), stored)
    if scheme not in DOVECOT_SCHEMES:
        return f"Dovecot knows no scheme {scheme}"
    accepted = _ACCEPTS.get(scheme)
    if accepted is None or digest.startswith(accepted) or (scheme in _LIBCRYPT_SCHEMES and _DES_CRYPT.match(digest)):
        return None
    found = crypt_scheme(digest)
    what = f"a {found} hash ({digest[:4]}…)" if found else f"not a {scheme} hash ({digest[:4]}…)"
    via = f"{{{scheme}}} prefix" if parts else f"default_pass_scheme = {scheme}"
    return f"{what}, verified as {scheme} ({via}): every login is refused"


def scheme_fix(stored: str, default_scheme: str) -> str:
    """What makes `stored` verifiable again (for a hash scheme_problem refused)."""
    parts = split_scheme(stored)
    digest = parts[1] if parts else stored
    found = crypt_scheme(digest)
    if found is None:
        return "set the password again (`mailstack user passwd ADDRESS`)"
    if parts:
        return f"store it as {{{found}}}{digest[:4]}… (the prefix of the scheme it is in)"
    return (f"set default_pass_scheme = {found} (or CRYPT, which verifies every crypt-style hash) in "
            f"dovecot-sql.conf.ext, or store the hash with its prefix: {{{found}}}{digest[:4]}…")


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
