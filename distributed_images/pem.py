"""PEM files named on a command line, checked before they are used: one that cannot be read, or
that holds no certificate, is refused naming itself, rather than failing later deep inside gRPC
or Redis (a traceback, or C-level lines about a handshake, while the process keeps running)."""

from __future__ import annotations

import ssl
from pathlib import Path


def check_ca_file(path: Path) -> None:
    """ValueError unless `path` is a PEM file of certificates to trust (a `--*tls-ca` flag)."""
    data = _read(path)
    try:
        ssl.create_default_context(cadata=data.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError):
        raise ValueError(f"{path} holds no PEM certificate") from None


def check_key_pair(cert: Path, key: Path) -> None:
    """ValueError unless `cert` is a PEM certificate and `key` its private key."""
    for path in (cert, key):
        _read(path)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{key} is not the private key of {cert}") from None
        raise ValueError(f"{cert} and {key} are not a PEM certificate and its key") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
