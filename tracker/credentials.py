"""Who may call the tracker: credentials derived from the cluster secret.

The cluster secret lives with the tracker alone. Each node gets a credential of its own,
`di1.node.<id>.<mac>`, where `mac` is HMAC-SHA256 of the role and the node id under the cluster
secret; the operator's commands (`status`, `preheat`) get `di1.operator.<name>.<mac>`. The tracker
derives the mac again and compares, so it keeps no list of credentials, and a node that is taken
over holds only its own: it can speak for itself and nobody else. Names travel base64url-encoded,
so a node id may be any string (the default is the node's `host:port`).

Issue them with `distributed-images credential`; docs/security.md says why this scheme was chosen.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

VERSION = "di1"
MIN_SECRET_BYTES = 16
MAX_CREDENTIAL_CHARS = 1024
_CONTEXT = b"distributed-images credential v1\0"


class Role(enum.Enum):
    NODE = "node"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str  # the node id, for a node


class CredentialError(ValueError):
    """A credential or secret that cannot be used; the message says why, never the secret."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, role: Role, name: str) -> bytes:
    message = _CONTEXT + role.value.encode() + b"\0" + name.encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def issue(secret: bytes, role: Role, name: str) -> str:
    if not name:
        raise CredentialError("a credential needs a name (the node id)")
    return ".".join((VERSION, role.value, _b64(name.encode()), _b64(_mac(secret, role, name))))


def parse(credential: str) -> Identity:
    """The identity a credential claims (not checked: `Verifier` checks it)."""
    identity, _ = _split(credential)
    return identity


def _split(credential: str) -> tuple[Identity, bytes]:
    parts = credential.strip().split(".")
    if len(credential) > MAX_CREDENTIAL_CHARS or len(parts) != 4 or parts[0] != VERSION:
        raise CredentialError(f"not a {VERSION} credential")
    try:
        role = Role(parts[1])
        name = _unb64(parts[2]).decode()
        mac = _unb64(parts[3])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"not a {VERSION} credential") from None
    return Identity(role, name), mac


class Verifier:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise CredentialError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def identify(self, credential: str) -> Identity | None:
        """Who presents `credential`, or None when it is not one this secret issued."""
        try:
            identity, mac = _split(credential)
        except CredentialError:
            return None
        expected = _mac(self._secret, identity.role, identity.name)
        return identity if hmac.compare_digest(mac, expected) else None


def new_secret() -> bytes:
    return secrets.token_urlsafe(32).encode()


def read_secret(path: Path) -> bytes:
    """The cluster secret from a file (surrounding whitespace ignored)."""
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise CredentialError(f"cannot read the secret file {path}: {e.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise CredentialError(
            f"the secret in {path} is shorter than {MIN_SECRET_BYTES} bytes: use a random one"
        )
    return secret


def read_credential(path: Path) -> str:
    try:
        credential = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialError(f"cannot read the credential file {path}: {e}") from None
    parse(credential)
    return credential
