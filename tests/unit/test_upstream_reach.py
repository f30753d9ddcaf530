"""Which addresses an upstream connection may go to (`node.upstream.reach`)."""

from __future__ import annotations

import socket

import pytest

from node.upstream.reach import AddressRefused, Reach, is_public, parse_address, parse_network

NOT_PUBLIC = [
    "127.0.0.1",
    "127.0.0.2",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space
    "224.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fd00::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "fe80::1%lo",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_and_link_local_addresses_are_not_public(address: str) -> None:
    assert not is_public(parse_address(address))
    assert not Reach().allows(parse_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_reached(address: str) -> None:
    assert Reach().allows(parse_address(address))


def test_a_configured_registry_reaches_its_own_address_and_the_allowed_networks() -> None:
    reach = Reach.for_url("http://10.0.0.5:5000", [parse_network("10.0.1.0/24")])
    assert reach.allows(parse_address("10.0.0.5"))
    assert reach.allows(parse_address("10.0.1.77"))
    assert not reach.allows(parse_address("10.0.0.6"))
    assert not reach.allows(parse_address("127.0.0.1"))


def test_a_configured_host_name_is_allowed_where_it_resolves() -> None:
    reach = Reach.for_url("https://registry.corp:5000")
    assert not reach.allows(parse_address("10.0.0.5"))
    reach.resolved("other.corp", [_result("10.0.0.5")])
    assert not reach.allows(parse_address("10.0.0.5"))
    reach.resolved("registry.corp", [_result("10.0.0.5")])
    assert reach.allows(parse_address("10.0.0.5"))
    reach.resolved("registry.corp", [_result("10.0.0.9")])  # it moved
    assert not reach.allows(parse_address("10.0.0.5"))


def test_the_socket_factory_refuses_before_connecting() -> None:
    reach = Reach.for_url("http://127.0.0.1:5000")
    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.2", 80))
    with pytest.raises(AddressRefused, match=r"127\.0\.0\.2"):
        reach.socket_factory(info)
    allowed = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 6000))
    reach.socket_factory(allowed).close()


def test_networks_must_be_cidr() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_network("registry.corp")


def _result(host: str) -> dict[str, object]:
    return {
        "hostname": "",
        "host": host,
        "port": 0,
        "family": socket.AF_INET,
        "proto": 0,
        "flags": 0,
    }
