"""The world's files in a stack's state directory (pure file work; stack.py applies them to the containers).

    config/dns/records.conf   what the DNS server serves (world/dns.py), for the domains in config/dns/domains
    config/dkim/              the domains' signing keys and selectors.map (world/dkim.py), mounted in rspamd
    config/outside/           the outside MX's certificate from the stack's CA, and ca.crt to send with
    world/outbound/           what the outside MX received (bind-mounted: read here directly)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailstack import certs
from mailstack.settings import Settings
from mailstack.world import dkim
from mailstack.world import dns as world_dns
from mailstack.world.network import StackNetwork

OUTSIDE_TLS_STEM = "outside"


@dataclass(frozen=True)
class WorldPaths:
    dns_dir: Path
    dkim_dir: Path
    outside_tls_dir: Path
    outbound_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> WorldPaths:
        return cls(settings.config_dir / "dns", settings.config_dir / "dkim", settings.config_dir / "outside",
                   settings.state_dir / "world" / "outbound")

    @property
    def records_file(self) -> Path:
        return self.dns_dir / "records.conf"

    @property
    def domains_file(self) -> Path:
        return self.dns_dir / "domains"


def remembered_domains(paths: WorldPaths) -> list[str]:
    try:
        return [line.strip() for line in paths.domains_file.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def domain_records(settings: Settings, network: StackNetwork, domain: str, paths: WorldPaths) -> list[world_dns.Record]:
    """What a real deployment of a local domain publishes: MX, A, SPF, DKIM (every key still on disk, the
    previous one too during a rotation), DMARC, and the PTR hint."""
    selector = dkim.ensure_key(paths.dkim_dir, domain)
    current = dkim.record(paths.dkim_dir, domain, selector)
    records = world_dns.domain_records(domain, settings.hostname, network.postfix,
                                       dkim=(selector, current.value))
    for other in dkim.records(paths.dkim_dir, domain):
        if other.name != current.name:
            records.append(world_dns.Record(other.name, "TXT", other.value))
    return records


def make_directories(settings: Settings) -> WorldPaths:
    """The world's directories (the containers mount them), the DKIM one owner-only."""
    paths = WorldPaths.of(settings)
    for directory in (paths.dns_dir, paths.outbound_dir, paths.outside_tls_dir):
        directory.mkdir(parents=True, exist_ok=True)
    paths.dkim_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.dkim_dir, 0o700)
    return paths


def render(settings: Settings, network: StackNetwork, domains: Iterable[str] | None = None) -> bool:
    """Write the world's files for these local domains (None: the ones rendered last time). Returns whether
    the DNS records changed. Idempotent: keys and certificates are made only when missing."""
    paths = make_directories(settings)
    ca = certs.ensure_tls(settings.config_dir / "tls", settings.hostname)
    certs.ensure_named_cert(ca, paths.outside_tls_dir, OUTSIDE_TLS_STEM, world_dns.OUTSIDE_HOST)
    names = sorted({dkim.normalize_domain(d) for d in domains}) if domains is not None else remembered_domains(paths)
    records = [world_dns.Record(settings.hostname, "A", network.postfix),
               world_dns.ptr_record(network.postfix, settings.hostname),
               *world_dns.outside_records(network.outside)]
    for name in names:
        records += domain_records(settings, network, name, paths)
    outside = [world_dns.OUTSIDE_DOMAIN, world_dns.SPF_FAIL_DOMAIN, world_dns.DMARC_REJECT_DOMAIN]
    text = world_dns.render_server_config(records, domains=[*names, *outside],
                                          every_other_domain_mx=world_dns.OUTSIDE_HOST)
    _write_if_changed(paths.domains_file, "".join(f"{name}\n" for name in names))
    return _write_if_changed(paths.records_file, text)


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)  # the DNS image watches the directory: it never sees half a file
    return True
