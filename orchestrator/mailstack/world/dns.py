"""DNS records of the stack's world: a frozen model, the records of a domain, zone lines and the DNS image's file.

The stack's DNS server (images/dns, unbound) answers only from the file `render_server_config` produces: the
orchestrator writes it into the directory mounted at /run/mailstack/dns and the server re-reads it (its own
poll of the file's mtime, or at once with `docker exec <dns> dns-reload`). Every other name is NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_TTL = 60
"""Short on purpose: a test that changes a record should not wait for a cache."""

TYPES = ("A", "MX", "TXT", "PTR")
TXT_CHUNK = 255
"""The most bytes in one character-string of a TXT record (RFC 1035 3.3.14); longer values are split."""

OUTSIDE_HOST = "mx.outside.test"
OUTSIDE_DOMAIN = "outside.test"
"""Mail from here passes SPF when sent from the outside MX's address (DMARC p=none)."""
SPF_FAIL_DOMAIN = "spf-fail.test"
"""Its SPF allows only 192.0.2.1 (TEST-NET-1): mail from the outside MX fails SPF (-all); no DMARC record."""
DMARC_REJECT_DOMAIN = "dmarc-reject.test"
"""SPF fails from the outside MX as for SPF_FAIL_DOMAIN, and DMARC says p=reject: a checking receiver rejects."""
NEVER_SENDER_IP = "192.0.2.1"

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class RecordError(ValueError):
    """A record that no DNS server could serve (bad name, type or value)."""


def normalise_name(name: str) -> str:
    """Lower-case, no trailing dot; each label 1-63 of [a-z0-9_-] (underscores for _dmarc, _domainkey)."""
    out = name.strip().rstrip(".").lower()
    if not out or len(out) > 253 or not all(_LABEL.match(label) for label in out.split(".")):
        raise RecordError(f"not a DNS name: {name!r}")
    return out


@dataclass(frozen=True)
class Record:
    """One resource record. `value` by type: A an IPv4 address, MX "PREFERENCE HOST", TXT the whole text
    (split into 255-byte strings only when rendered), PTR a host name. Names are stored without the trailing dot.
    """

    name: str
    type: str
    value: str
    ttl: int = DEFAULT_TTL

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalise_name(self.name))
        kind = self.type.upper()
        object.__setattr__(self, "type", kind)
        if kind not in TYPES:
            raise RecordError(f"record type {self.type!r} not supported (one of {', '.join(TYPES)})")
        if not 0 <= self.ttl <= 2**31 - 1:
            raise RecordError(f"TTL out of range: {self.ttl}")
        if kind == "A":
            try:
                object.__setattr__(self, "value", str(ipaddress.IPv4Address(self.value.strip())))
            except ValueError as exc:
                raise RecordError(f"A record of {self.name}: not an IPv4 address: {self.value!r}") from exc
        elif kind == "MX":
            parts = self.value.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 65535:
                raise RecordError(f"MX record of {self.name}: want 'PREFERENCE HOST', got {self.value!r}")
            object.__setattr__(self, "value", f"{int(parts[0])} {normalise_name(parts[1])}")
        elif kind == "PTR":
            object.__setattr__(self, "value", normalise_name(self.value))
        elif kind == "TXT":
            try:
                self.value.encode("ascii")
            except UnicodeEncodeError as exc:
                raise RecordError(f"TXT record of {self.name}: only ASCII text is supported") from exc

    @property
    def rdata(self) -> str:
        """The value in master-file syntax (absolute names, TXT as quoted 255-byte strings)."""
        if self.type == "MX":
            preference, host = self.value.split()
            return f"{preference} {host}."
        if self.type == "PTR":
            return f"{self.value}."
        if self.type == "TXT":
            return " ".join(f'"{_escape(chunk)}"' for chunk in txt_strings(self.value))
        return self.value

    def zone_line(self) -> str:
        return f"{self.name}. {self.ttl} IN {self.type} {self.rdata}"


def txt_strings(value: str) -> list[str]:
    """A TXT value as the character-strings it is sent as: 255 bytes each (an empty value is one empty string)."""
    return [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]


def _escape(text: str) -> str:
    # Inside a quoted master-file string: \" and \\, and \DDD for anything not printable. The single quote is
    # \DDD too: the unbound file quotes each whole record with single quotes.
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "'" or not " " <= ch <= "~":
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    return "".join(out)


def ptr_record(ip: str, host: str, ttl: int = DEFAULT_TTL) -> Record:
    """The reverse record of an address (x.y.z.w.in-addr.arpa PTR host)."""
    return Record(ipaddress.ip_address(ip).reverse_pointer, "PTR", host, ttl)


def domain_records(
    domain: str,
    mail_host: str,
    mail_ip: str,
    dkim: tuple[str, str] | None = None,
    *,
    spf: str | None = None,
    dmarc: str | None = "v=DMARC1; p=none",
    mx_preference: int = 10,
    ttl: int = DEFAULT_TTL,
    ptr: bool = True,
) -> list[Record]:
    """What a domain served by the stack publishes: MX → mail_host, A of mail_host, SPF, DKIM, DMARC, PTR.

    `dkim` is (selector, TXT value such as "v=DKIM1; k=rsa; p=MII..."); None leaves the DKIM record out.
    `spf` defaults to allowing exactly the mail host's address; `dmarc=None` leaves DMARC out. The PTR of
    mail_ip → mail_host is the hint for the reverse zone (what a receiver's FCrDNS check wants).
    """
    domain = normalise_name(domain)
    records = [
        Record(domain, "MX", f"{mx_preference} {mail_host}", ttl),
        Record(mail_host, "A", mail_ip, ttl),
        Record(domain, "TXT", spf or f"v=spf1 ip4:{ipaddress.IPv4Address(mail_ip)} -all", ttl),
    ]
    if dkim is not None:
        selector, value = dkim
        records.append(Record(f"{selector}._domainkey.{domain}", "TXT", value, ttl))
    if dmarc:
        records.append(Record(f"_dmarc.{domain}", "TXT", dmarc, ttl))
    if ptr:
        records.append(ptr_record(mail_ip, mail_host, ttl))
    return records


def outside_records(outside_ip: str, host: str = OUTSIDE_HOST, ttl: int = DEFAULT_TTL) -> list[Record]:
    """The outside test domains, all with MX → the outside MX (host, outside_ip):

    - OUTSIDE_DOMAIN: SPF `v=spf1 ip4:<outside_ip> -all` (passes from the outside MX), DMARC p=none;
    - SPF_FAIL_DOMAIN: SPF allows only NEVER_SENDER_IP: fails from the outside MX; no DMARC;
    - DMARC_REJECT_DOMAIN: SPF fails likewise and DMARC p=reject (strict alignment).
    """
    outside_ip = str(ipaddress.IPv4Address(outside_ip))
    records = [Record(host, "A", outside_ip, ttl), ptr_record(outside_ip, host, ttl)]
    for domain, spf, dmarc in (
        (OUTSIDE_DOMAIN, f"v=spf1 ip4:{outside_ip} -all", "v=DMARC1; p=none"),
        (SPF_FAIL_DOMAIN, f"v=spf1 ip4:{NEVER_SENDER_IP} -all", None),
        (DMARC_REJECT_DOMAIN, f"v=spf1 ip4:{NEVER_SENDER_IP} -all", "v=DMARC1; p=reject; adkim=s; aspf=s"),
    ):
        records.append(Record(domain, "MX", f"10 {host}", ttl))
        records.append(Record(domain, "TXT", spf, ttl))
        if dmarc:
            records.append(Record(f"_dmarc.{domain}", "TXT", dmarc, ttl))
    return records


def unique(records: Iterable[Record]) -> list[Record]:
    """The records in order, each (name, type, value) once (two domains on one mail host share its A record)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for record in records:
        key = (record.name, record.type, record.value)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def as_zone_lines(records: Iterable[Record]) -> list[str]:
    """RFC 1035 master-file lines with absolute names and explicit TTL and class (no $ORIGIN needed)."""
    return [record.zone_line() for record in unique(records)]


def zones_of(records: Iterable[Record], domains: Iterable[str] = ()) -> list[str]:
    """The zones the records file declares: each of `domains`, each record's name not under one of them
    (a host name like mail.example.test), and in-addr.arpa (reverse lookups: NXDOMAIN unless a PTR is there)."""
    zones = {normalise_name(domain) for domain in domains} | {"in-addr.arpa"}
    for record in records:
        if not any(record.name == zone or record.name.endswith("." + zone) for zone in zones):
            zones.add(record.name)
    return sorted(zones, key=lambda zone: (zone.count("."), zone))


def render_server_config(records: Iterable[Record], domains: Iterable[str] = (),
                         every_other_domain_mx: str | None = None) -> str:
    """The records file the DNS image reads (an unbound `server:` clause of local-zone and local-data lines).

    Each zone (zones_of) is static: a name in it that has no record is NXDOMAIN. Every name outside them:
    NXDOMAIN too (`"." static`); or, with every_other_domain_mx, every other domain's MX is that host (the
    outside MX: mail to any domain of "the internet" reaches it by a real MX lookup), other types NODATA,
    never a timeout. Write it atomically
    (temporary file + rename in the mounted directory: mount the directory, not the file, or a rename is not
    seen). The image's dns-reload checks it with unbound-checkconf and copies it in place as root, so its
    mode does not matter; a file that does not check is refused and the old records stay served.
    """
    records = unique(records)
    lines = ["# Rendered by mailstack (mailstack.world.dns.render_server_config): do not edit.", "server:"]
    if every_other_domain_mx:
        lines += ['  local-zone: "." redirect',
                  f"  local-data: '. {DEFAULT_TTL} IN MX 10 {normalise_name(every_other_domain_mx)}.'"]
    else:
        lines.append('  local-zone: "." static')
    lines += [f'  local-zone: "{zone}." static' for zone in zones_of(records, domains)]
    lines += [f"  local-data: '{line}'" for line in as_zone_lines(records)]
    return "\n".join(lines) + "\n"
