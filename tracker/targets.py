"""The tracker replicas a client may talk to: `--tracker` as given, resolved to addresses.

`--tracker` is one `HOST:PORT`, several separated by commas, or a DNS name with several addresses
(a Kubernetes headless Service): every address of every name is a replica. A client talks to one
at a time and moves to the next when it fails; names are resolved again once every address failed
in turn, since replicas come and go with new addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from tracker import address


@dataclass(frozen=True)
class Target:
    address: str  # what to dial: an IP address and port, or the name when it does not resolve
    name: str  # the host name given, for TLS: certificates name the Service, not pod IPs


def parse(spec: str) -> list[tuple[str, int]]:
    """`HOST:PORT[,HOST:PORT...]` as (host, port) pairs; ValueError if malformed."""
    found = [address.split(part.strip()) for part in spec.split(",") if part.strip()]
    if not found:
        raise ValueError(f"no tracker address in {spec!r}")
    return found


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(spec: str) -> list[Target]:
    """Every address of every replica named, in the order given, without repeats."""
    loop = asyncio.get_running_loop()
    targets: list[Target] = []
    for host, port in parse(spec):
        if _is_ip(host):
            addresses = [host]
        else:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            except OSError:
                addresses = [host]  # let the channel report it: the name may resolve later
        for ip in addresses:
            target = Target(address.join(ip, port), host)
            if target not in targets:
                targets.append(target)
    return targets
