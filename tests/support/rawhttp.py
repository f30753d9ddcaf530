"""HTTP/1.1 on a bare socket, for requests an HTTP client library would not send as written.

aiohttp (yarl) normalizes `..` out of a path and never shows the bytes a server sends after the
headers of a HEAD response; a registry must be tested against both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes  # every byte after the headers, up to the connection's end

    def json(self) -> object:
        return json.loads(self.body)


async def request(
    host: str,
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> RawResponse:
    """Send `METHOD target HTTP/1.1` exactly as given to `host` (HOST:PORT), read to EOF."""
    address, _, port = host.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, int(port)), timeout)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response header from {host}: {raw[:300]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.add(name.strip(), value.strip())
    return RawResponse(int(status_line.split()[1]), parsed, _dechunk(parsed, body))


def _dechunk(headers: CIMultiDict[str], body: bytes) -> bytes:
    if headers.get("Transfer-Encoding", "").lower() != "chunked":
        return body
    out = bytearray()
    rest = body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


async def stalled_read(host: str, target: str, times: int, whole: int, idle: float = 3.0) -> int:
    """Ask for `target` `times` over one connection to `host` (HOST:PORT), read nothing for
    `idle` seconds, then read until the connection ends or `whole` bytes came: how many came.
    A server that cuts off a client that stopped reading sends less than `whole`."""
    address, _, port = host.rpartition(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() * times)
    await writer.drain()
    await asyncio.sleep(idle)
    received = 0
    try:
        while received < whole and (chunk := await asyncio.wait_for(reader.read(1 << 20), 5)):
            received += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return received
