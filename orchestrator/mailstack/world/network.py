"""The stack network's subnet and fixed addresses (pure: the caller says which subnets exist).

Disposable stacks run side by side, each on its own network, so each stack picks a subnet no existing
Docker network overlaps. Its services that others address by IP (the DNS server every container is
pointed at; the hosts the DNS records name) get fixed addresses in the lower half; Docker's own
allocation is confined to the upper half (`ip_range`), so a container started without a fixed address can
never take one of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailstack.errors import MailstackError

DEFAULT_POOL = ipaddress.IPv4Network("10.213.0.0/16")
"""Where stack subnets are taken from: private (RFC 1918), outside Docker's default address pools
(172.17-31.x, 192.168.x), so Docker's own automatic networks never compete for it."""

HOSTS = {"gateway": 1, "dns": 2, "outside": 3, "postfix": 4, "dovecot": 5, "mysql": 6, "rspamd": 7, "webmail": 8}
"""Host numbers inside the subnet (gateway .1, dns .2, outside MX .3, ...)."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class StackNetwork:
    """A stack's subnet, Docker's dynamic range and the fixed addresses (compose: ipam + ipv4_address)."""

    subnet: ipaddress.IPv4Network
    ip_range: ipaddress.IPv4Network
    addresses: Mapping[str, ipaddress.IPv4Address]

    @property
    def gateway(self) -> str:
        return self.ip("gateway")

    @property
    def dns(self) -> str:
        return self.ip("dns")

    @property
    def outside(self) -> str:
        return self.ip("outside")

    @property
    def postfix(self) -> str:
        return self.ip("postfix")

    def ip(self, host: str) -> str:
        return str(self.addresses[host])


def stack_network(subnet: str | ipaddress.IPv4Network) -> StackNetwork:
    """The fixed addresses of a subnet (/24 to /27) and its dynamic range (the upper half)."""
    net = ipaddress.IPv4Network(subnet)
    if not 24 <= net.prefixlen <= 27:
        raise MailstackError(f"stack subnet {net}: want a /24 to /27", "e.g. 10.213.7.0/24 or 10.213.7.64/26")
    upper = list(net.subnets(prefixlen_diff=1))[1]
    addresses = {name: net.network_address + number for name, number in HOSTS.items()}
    return StackNetwork(net, upper, addresses)


def _parse(subnet: object) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(str(subnet).strip(), strict=False)
    except ValueError:
        return None


def pick_subnet(
    existing: Iterable[str | IPNetwork],
    *,
    pool: str | ipaddress.IPv4Network = DEFAULT_POOL,
    prefix: int = 24,
    seed: str | None = None,
) -> ipaddress.IPv4Network:
    """A /`prefix` of `pool` that overlaps none of `existing` (IPv6 and unparsable entries are ignored).

    Without a seed, the first free one; with one (the stack's project name), the search starts at a place
    derived from it, so stacks created at the same moment rarely race for the same subnet (a lost race is
    Docker refusing the network: add that subnet to `existing` and pick again).
    """
    pool = ipaddress.IPv4Network(pool)
    if prefix < pool.prefixlen or not 24 <= prefix <= 27:
        raise MailstackError(f"cannot take /{prefix} subnets from {pool}")
    taken = [net for net in (_parse(s) for s in existing) if isinstance(net, ipaddress.IPv4Network)]
    count = 2 ** (prefix - pool.prefixlen)
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % count if seed else 0
    size = 2 ** (32 - prefix)
    for i in range(count):
        candidate = ipaddress.IPv4Network((int(pool.network_address) + ((start + i) % count) * size, prefix))
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise MailstackError(f"no free /{prefix} left in {pool}: every one overlaps an existing Docker network",
                         "remove unused networks (docker network prune) or choose another pool")


def subnets_of(network: Any) -> list[str]:
    """The subnets of one Docker network: `docker network inspect` JSON (a mapping with IPAM.Config[].Subnet),
    a python-on-whales Network (.ipam.config), or a plain subnet string."""
    if isinstance(network, str):
        return [network]
    if isinstance(network, Mapping):
        ipam = network.get("IPAM") or network.get("ipam") or {}
        configs = ipam.get("Config") or ipam.get("config") or []
    else:
        ipam = getattr(network, "ipam", None)
        configs = getattr(ipam, "config", None) or []
    out = []
    for config in configs:
        subnet = config.get("Subnet") or config.get("subnet") if isinstance(config, Mapping) else None
        if subnet:
            out.append(str(subnet))
    return out


def existing_subnets(list_networks: Callable[[], Iterable[Any]]) -> list[IPNetwork]:
    """Every subnet of the networks `list_networks()` returns (stack.py passes docker's network list)."""
    out = []
    for network in list_networks():
        for subnet in subnets_of(network):
            parsed = _parse(subnet)
            if parsed is not None:
                out.append(parsed)
    return out


def choose_network(list_networks: Callable[[], Iterable[Any]], *, seed: str | None = None,
                   pool: str | ipaddress.IPv4Network = DEFAULT_POOL, prefix: int = 24) -> StackNetwork:
    """pick_subnet over the existing networks' subnets, with its fixed addresses."""
    return stack_network(pick_subnet(existing_subnets(list_networks), pool=pool, prefix=prefix, seed=seed))
