"""Whose credentials the node presents when it asks an upstream registry for something.

    Credential
    ├── Anonymous        no credentials at all
    ├── NodeCredential   the node's own, from `--auth-file` (`auth.Credentials`)
    └── Requester        a client's own, from its request's Authorization header
        ├── RequesterBasic    user and password: the node answers the upstream's challenge
        │                     with them, as the client would have
        └── RequesterBearer   a token the client obtained: sent to the upstream as it is

A credential is told apart in caches by `key`: for a requester's, an HMAC of it under a key drawn
when the process starts and kept in memory only, so no cache, log line or metric ever holds the
credential itself. `repr()` shows the kind and the start of that key, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

_HASH_KEY = secrets.token_bytes(32)
MAX_HEADER = 8192  # an Authorization header longer than this is not parsed


class Credential:
    kind = "credential"

    @property
    def key(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"<{self.kind} credential {self.key[:12]}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credential) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


class Anonymous(Credential):
    kind = "anonymous"


class NodeCredential(Credential):
    kind = "node"


class Requester(Credential):
    """A client's credential; `key` is a keyed hash of it."""

    def __init__(self, material: bytes) -> None:
        self._key = hmac.new(_HASH_KEY, self.kind.encode() + b"\0" + material, hashlib.sha256)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self._key.hexdigest()}"


class RequesterBasic(Requester):
    kind = "basic"

    def __init__(self, user: str, password: str) -> None:
        super().__init__(f"{user}\0{password}".encode())
        self._pair = (user, password)

    @property
    def pair(self) -> tuple[str, str]:
        return self._pair


class RequesterBearer(Requester):
    kind = "bearer"

    def __init__(self, token: str) -> None:
        super().__init__(token.encode())
        self._token = token

    @property
    def authorization(self) -> str:
        return "Bearer " + self._token


ANONYMOUS = Anonymous()
NODE = NodeCredential()


def from_authorization(header: str | None) -> Requester | None:
    """The credential a client sent, or None when it sent none that the node can use: no
    header, the empty Basic `:` that containers/image sends when it holds nothing for this host,
    or a header that is not well-formed Basic or Bearer (the request is then anonymous, and a
    repository that needs credentials answers it with a challenge)."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return RequesterBearer(value) if value else None
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or not (user or password):
        return None
    return RequesterBasic(user, password)
