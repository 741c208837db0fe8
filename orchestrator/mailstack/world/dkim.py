"""DKIM signing keys, one directory for the stack, read by the rspamd image.

Layout of ``directory`` (mounted read-only at /run/mailstack/dkim; images/rspamd/dkim-sync.sh copies it
for rspamd's _rspamd user, because these files are owner-only on the host):

    <domain>.<selector>.key   RSA 2048 private key, PEM (PKCS#8), mode 0600
    selectors.map             "<domain> <selector>" lines: the key each domain signs with now

Selectors are ``ms<YYYYMMDD><NN>`` (UTC date and a counter): every rotation has a new name, so the record
of the previous key can stay published while mail signed with it is still in flight. A rotation keeps the
previous key and deletes older ones. A domain without a key is not signed.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailstack.secrets import write_private

KEY_BITS = 2048
SELECTORS_MAP = "selectors.map"
TXT_STRING_MAX = 255
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SELECTOR = re.compile(r"^ms(\d{8})(\d{2,})$")


@dataclass(frozen=True)
class DkimRecord:
    """The DNS TXT record publishing one key: ``name`` is absolute without the trailing dot."""

    name: str
    value: str

    def strings(self) -> list[str]:
        """The value as the character-strings of one TXT record (each at most 255 bytes)."""
        return split_txt(self.value)

    def zone_value(self) -> str:
        """The value as written in a zone file: quoted strings, e.g. ``"v=DKIM1; ... " "...AQAB"``."""
        return " ".join(f'"{part}"' for part in self.strings())


def split_txt(value: str, size: int = TXT_STRING_MAX) -> list[str]:
    """Cut a TXT value into strings of at most ``size`` bytes; resolvers join them back without a separator."""
    if not 0 < size <= TXT_STRING_MAX:
        raise ValueError(f"TXT strings hold 1 to {TXT_STRING_MAX} bytes, not {size}")
    if not value.isascii() or '"' in value or "\\" in value:
        raise ValueError("a DKIM TXT value is printable ASCII without quotes or backslashes")
    return [value[start : start + size] for start in range(0, len(value), size)] or [""]


def normalize_domain(domain: str) -> str:
    name = domain.strip().rstrip(".").lower()
    if not _DOMAIN.match(name):
        raise ValueError(f"not a domain name: {domain!r}")
    return name


def key_path(directory: Path, domain: str, selector: str) -> Path:
    return directory / f"{normalize_domain(domain)}.{selector}.key"


def read_selectors(directory: Path) -> dict[str, str]:
    """The current selector of every domain with a key."""
    path = directory / SELECTORS_MAP
    if not path.exists():
        return {}
    selectors: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and not line.startswith("#"):
            selectors[fields[0]] = fields[1]
    return selectors


def current_selector(directory: Path, domain: str) -> str | None:
    return read_selectors(directory).get(normalize_domain(domain))


def selectors(directory: Path, domain: str) -> list[str]:
    """Every selector with a key file for ``domain``, oldest first."""
    prefix = normalize_domain(domain) + "."
    found = []
    for path in directory.glob(prefix + "*.key"):
        selector = path.name[len(prefix) : -len(".key")]
        if _SELECTOR.match(selector):
            found.append(selector)
    return sorted(found, key=_selector_order)


def ensure_key(directory: Path, domain: str, *, today: dt.date | None = None) -> str:
    """The domain's current selector, making its first key if it has none."""
    selector = current_selector(directory, domain)
    if selector is not None and key_path(directory, domain, selector).exists():
        return selector
    return rotate(directory, domain, today=today)


def rotate(directory: Path, domain: str, *, today: dt.date | None = None) -> str:
    """Make a new key under a new selector and sign with it from now on; keep the previous key only.

    A running rspamd signs with the new key once ``dkim-sync.sh`` has run in its container (it copies the
    keys; rspamd notices the changed map within a second, no reload). Stack.sync_world publishes the new
    record and keeps the previous one while its key is on disk.
    """
    name = normalize_domain(domain)
    _private_dir(directory)
    existing = selectors(directory, name)
    selector = _next_selector(existing, today or dt.datetime.now(dt.timezone.utc).date())
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(key_path(directory, name, selector), pem)
    mapping = read_selectors(directory)
    previous = mapping.get(name)
    mapping[name] = selector
    _write_selectors(directory, mapping)
    for old in existing:
        if old != previous:
            key_path(directory, name, old).unlink(missing_ok=True)
    return selector


def remove(directory: Path, domain: str) -> None:
    """Stop signing for ``domain`` and delete its keys."""
    name = normalize_domain(domain)
    mapping = read_selectors(directory)
    if mapping.pop(name, None) is not None:
        _write_selectors(directory, mapping)
    for selector in selectors(directory, name):
        key_path(directory, name, selector).unlink(missing_ok=True)


def record(directory: Path, domain: str, selector: str | None = None) -> DkimRecord:
    """The TXT record of the domain's current key (or of ``selector``)."""
    name = normalize_domain(domain)
    selector = selector or current_selector(directory, name)
    if selector is None:
        raise FileNotFoundError(f"no DKIM key for {name} in {directory}")
    # The public half is all a record needs: OpenSSL's consistency check of the private key (~30 ms per
    # 2048-bit key, several records per stack start) is skipped for these keys rotate() wrote.
    key = serialization.load_pem_private_key(key_path(directory, name, selector).read_bytes(), password=None,
                                             unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path(directory, name, selector)} is not an RSA key")
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b64 = base64.b64encode(public).decode("ascii")
    return DkimRecord(name=f"{selector}._domainkey.{name}", value=f"v=DKIM1; k=rsa; p={b64}")


def records(directory: Path, domain: str) -> list[DkimRecord]:
    """The records to publish: every key still on disk (the previous one too, during a rotation)."""
    return [record(directory, domain, selector) for selector in selectors(directory, domain)]


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_selectors(directory: Path, mapping: dict[str, str]) -> None:
    _private_dir(directory)
    text = "".join(f"{domain} {selector}\n" for domain, selector in sorted(mapping.items()))
    write_private(directory / SELECTORS_MAP, text.encode())


def _selector_order(selector: str) -> tuple[str, int]:
    match = _SELECTOR.match(selector)
    assert match is not None
    return match.group(1), int(match.group(2))


def _next_selector(existing: list[str], today: dt.date) -> str:
    date = today.strftime("%Y%m%d")
    latest = max((_selector_order(s) for s in existing), default=("", 0))
    counter = latest[1] + 1 if latest[0] == date else 1
    if latest[0] > date:  # the clock went back: keep the names growing
        date, counter = latest[0], latest[1] + 1
    return f"ms{date}{counter:02d}"
