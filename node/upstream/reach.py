"""Which addresses the node's connections for an upstream registry may go to.

An upstream, or a redirect it sends (to blob storage, a token service), must not make the node
reach a service that only its own host or network can: a metadata endpoint on a link-local
address, an admin API on loopback, the cluster's private network. So every upstream connection
goes to a public address, or to one the operator allowed for that registry: the addresses its
own configured host resolves to (a private registry's token service and storage often share
them), and the networks of `--private-upstream-networks`.

The check runs when the socket is created, on the address actually connected to: a name that
resolves to a private address (DNS rebinding, or `http://2130706433/`) is caught as surely as
an IP literal. Each registry that may reach private addresses gets a connection pool of its own
(`Reach` per session), so a pooled connection of one can never be reused for another.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientConnectorError
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(ConnectionRefusedError):
    """A connection the node will not open (an address its upstream may not reach)."""


def parse_address(text: str) -> Address:
    address = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: Address) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared, reserved."""
    return address.is_global and not address.is_multicast


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not a network (CIDR): {text!r}") from None


class Reach:
    """The addresses one connection pool may connect to."""

    def __init__(self, own_host: str | None = None, networks: Iterable[Network] = ()) -> None:
        self._own_host = own_host  # whose resolved addresses are allowed too
        self._own: set[Address] = set()
        self._networks = tuple(networks)
        if own_host is not None:
            with contextlib.suppress(ValueError):  # a name: allowed once `AllowingResolver` has it
                self._own.add(parse_address(own_host))

    @classmethod
    def for_url(cls, url: str, networks: Iterable[Network] = ()) -> Reach:
        """What a registry the operator configured at `url` may reach."""
        return cls(urlsplit(url).hostname, networks)

    def allows(self, address: Address) -> bool:
        return (
            is_public(address)
            or address in self._own
            or any(address in network for network in self._networks)
        )

    def resolved(self, host: str, results: list[ResolveResult]) -> None:
        """The configured host resolved to these addresses: it may be connected to there."""
        if host == self._own_host:
            self._own = {parse_address(r["host"]) for r in results}

    def socket_factory(self, addrinfo: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket factory: refuses an address before connecting to it."""
        family, kind, proto, _, sockaddr = addrinfo
        address = parse_address(sockaddr[0])
        if not self.allows(address):
            log.warning(
                "refusing an upstream connection to a non-public address",
                extra={"address": str(address), "port": sockaddr[1]},
            )
            raise AddressRefused(
                f"refusing to connect to {address}: not a public address, nor one this "
                "registry is configured at (--private-upstream-networks allows more)"
            )
        return socket.socket(family, kind, proto)


def refusal(error: BaseException) -> str | None:
    """Why the node refused the connection an aiohttp error is about, if it did."""
    if isinstance(error, ClientConnectorError) and isinstance(error.os_error, AddressRefused):
        return str(error.os_error)
    return None


class AllowingResolver(AbstractResolver):
    """The default resolver, telling `reach` where the registry's own host resolves to."""

    def __init__(self, reach: Reach) -> None:
        self._reach = reach
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        self._reach.resolved(host, results)
        return results

    async def close(self) -> None:
        await self._resolver.close()
