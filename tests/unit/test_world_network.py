"""Picking a free subnet for a stack and its fixed addresses."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mailstack.errors import MailstackError
from mailstack.world import network

DOCKER_DEFAULTS = ["172.17.0.0/16", "172.18.0.0/16", "fd00::/64", "not a subnet"]


def test_first_free_slash24_of_the_pool() -> None:
    assert str(network.pick_subnet(DOCKER_DEFAULTS)) == "10.213.0.0/24"
    assert str(network.pick_subnet(["10.213.0.0/24", "10.213.1.128/25"])) == "10.213.2.0/24"


def test_an_existing_supernet_or_subnet_blocks_a_candidate() -> None:
    assert str(network.pick_subnet(["10.213.0.0/23"])) == "10.213.2.0/24"
    assert str(network.pick_subnet(["10.213.0.7/32"])) == "10.213.1.0/24"
    with pytest.raises(MailstackError, match="no free /24"):
        network.pick_subnet(["10.0.0.0/8"])


def test_slash26_and_other_pools() -> None:
    assert str(network.pick_subnet(["10.213.0.0/26"], prefix=26)) == "10.213.0.64/26"
    assert str(network.pick_subnet([], pool="192.168.240.0/22")) == "192.168.240.0/24"
    with pytest.raises(MailstackError):
        network.pick_subnet([], prefix=16)


def test_seed_spreads_stacks_but_still_avoids_taken() -> None:
    a = network.pick_subnet([], seed="stack-a")
    assert network.pick_subnet([], seed="stack-a") == a
    assert network.pick_subnet([str(a)], seed="stack-a") != a
    assert len({network.pick_subnet([], seed=f"s{i}") for i in range(20)}) > 10


@given(st.lists(st.integers(0, 255), max_size=255), st.sampled_from([24, 25, 26]), st.text(max_size=8))
def test_picked_subnet_never_overlaps(taken_octets: list[int], prefix: int, seed: str) -> None:
    taken = [f"10.213.{o}.0/24" for o in taken_octets]
    picked = network.pick_subnet(taken, prefix=prefix, seed=seed or None)
    assert picked.subnet_of(network.DEFAULT_POOL) and picked.prefixlen == prefix
    assert not any(picked.overlaps(ipaddress.ip_network(t)) for t in taken)


def test_fixed_addresses_and_dynamic_range() -> None:
    net = network.stack_network("10.213.7.0/24")
    assert (net.gateway, net.dns, net.outside, net.postfix) == ("10.213.7.1", "10.213.7.2", "10.213.7.3", "10.213.7.4")
    assert str(net.ip_range) == "10.213.7.128/25"
    assert all(address not in net.ip_range for address in net.addresses.values())
    small = network.stack_network("10.213.7.64/26")
    assert (small.dns, str(small.ip_range)) == ("10.213.7.66", "10.213.7.96/27")
    with pytest.raises(MailstackError):
        network.stack_network("10.213.0.0/16")


def test_existing_subnets_reads_inspect_json_python_on_whales_objects_and_strings() -> None:
    inspect_json = {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}
    no_ipam = {"Name": "host", "IPAM": {"Config": None}}
    whales = SimpleNamespace(ipam=SimpleNamespace(config=[{"Subnet": "10.213.0.0/24"}, {"Subnet": "fd00::/64"}]))
    whales_none = SimpleNamespace(ipam=None)
    found = network.existing_subnets(lambda: [inspect_json, no_ipam, whales, whales_none, "192.168.0.0/20", "junk"])
    assert [str(n) for n in found] == ["172.17.0.0/16", "10.213.0.0/24", "fd00::/64", "192.168.0.0/20"]
    chosen = network.choose_network(lambda: [whales], seed=None)
    assert str(chosen.subnet) == "10.213.1.0/24"
