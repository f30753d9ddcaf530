"""`host:port` strings as flags and the wire carry them."""

from __future__ import annotations


def split(text: str, default_port: int | None = None) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or `host` when a default port is given."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return text.strip("[]"), default_port
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad port in {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
