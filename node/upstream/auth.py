"""Upstream authentication: anonymous, Basic, and the Bearer token flow.

The token flow (distribution's token spec): a request answered 401 carries a challenge
`Bearer realm=...,service=...,scope=...`; the token service at `realm` (with Basic credentials
when we have some for this registry) returns a token valid for `expires_in` seconds. Tokens are
cached per registry, scope and credential until shortly before they expire, and a registry's
realm is remembered, so later requests get their token before the first try.

Whose credentials answer a challenge is the request's `Upstream.credential`: the node's own (from
`--auth-file`, never for a `--requester-only` registry), a client's (node.access binds it for that
client's request), or none. A client's Bearer token goes to the registry as it is, never to a
token service; user and password go to the token service the registry names only over https or
on the registry's own host, and a redirect to another origin never carries them (aiohttp drops the
Authorization header when a redirect leaves the registry's origin).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from distributed_images.recent import Recent
from node.errors import UpstreamRefused, UpstreamUnauthorized, UpstreamUnavailable
from node.upstream.credential import NodeCredential, RequesterBasic, RequesterBearer
from node.upstream.reach import refusal
from node.upstream.registries import DOCKER_HUB, Upstream, is_loopback_host

log = logging.getLogger(__name__)

# `key=value` or `key="quoted \" value"`. A key starts where a word does and every quantifier is
# possessive, so a challenge is scanned once (an upstream's 8 KB header took half a second).
_PARAM = re.compile(r'(?<!\w)(\w++)=(?:"((?:[^"\\]++|\\.)*+)"|([^\s,]++))')
DEFAULT_TOKEN_SECONDS = 60
EXPIRY_MARGIN = 10.0
MAX_TOKENS = 10_000  # (registry, scope, credential) entries: clients choose scopes and credentials


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        params = {
            k.lower(): (quoted if quoted else bare) for k, quoted, bare in _PARAM.findall(rest)
        }
        return cls(scheme.lower(), params)


def _registry_key(key: str) -> str:
    """`https://index.docker.io/v1/` and `docker.io` name the same registry."""
    host = urlsplit(key).netloc if "://" in key else key.split("/")[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


class Credentials:
    """User and password per registry, from a Docker `config.json` (`auths` entries)."""

    def __init__(self, by_registry: dict[str, tuple[str, str]] | None = None) -> None:
        self._by_registry = by_registry or {}

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable auth file", extra={"path": str(path), "error": str(e)})
            return cls()
        auths = document.get("auths") if isinstance(document, dict) else None
        if not isinstance(auths, dict):
            if auths is not None or not isinstance(document, dict):
                log.warning(
                    "ignoring an auth file that is not a Docker config.json",
                    extra={"path": str(path), "expected": '{"auths": {REGISTRY: {"auth": ...}}}'},
                )
            return cls()
        found: dict[str, tuple[str, str]] = {}
        for key, entry in auths.items():
            pair = cls._pair(entry) if isinstance(entry, dict) else None
            if pair:
                found[_registry_key(key)] = pair
        return cls(found)

    @staticmethod
    def _pair(entry: dict[str, object]) -> tuple[str, str] | None:
        user, password, auth = entry.get("username"), entry.get("password"), entry.get("auth")
        if isinstance(user, str) and isinstance(password, str) and user and password:
            return user, password
        if not isinstance(auth, str):
            return None
        try:
            user, sep, password = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def for_upstream(self, upstream: Upstream) -> tuple[str, str] | None:
        host = urlsplit(upstream.base_url).netloc
        return self._by_registry.get(upstream.ns) or self._by_registry.get(_registry_key(host))


def pull_scope(upstream: Upstream, repo: str) -> str:
    """The token scope of pulling from a repository."""
    return f"repository:{upstream.repository(repo)}:pull"


def _basic(pair: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()


class Authenticator:
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._tokens: Recent[tuple[str, str, str], tuple[str, float]] = Recent(MAX_TOKENS)
        self._realms: dict[str, Challenge] = {}
        self._basic_only: set[str] = set()

    def has_own(self, upstream: Upstream) -> bool:
        """Whether the node's own credentials may serve clients of this upstream."""
        return not upstream.requester_only and self._credentials.for_upstream(upstream) is not None

    def _pair(self, upstream: Upstream) -> tuple[str, str] | None:
        """User and password to present for this request, if any."""
        credential = upstream.credential
        if isinstance(credential, RequesterBasic):
            return credential.pair
        if isinstance(credential, NodeCredential) and not upstream.requester_only:
            return self._credentials.for_upstream(upstream)
        return None

    def _token_key(self, upstream: Upstream, scope: str) -> tuple[str, str, str]:
        """Whose token: a client's, the node's, or anybody's (the node without credentials for
        this registry asks anonymously, and shares anonymous tokens with the access checks)."""
        credential = upstream.credential
        if isinstance(credential, (RequesterBasic, RequesterBearer)):
            return (upstream.ns, scope, credential.key)
        return (upstream.ns, scope, "node" if self._pair(upstream) else "anonymous")

    def forget(self, upstream: Upstream, scope: str) -> None:
        """Drop the cached token of this request's credential, so the next one asks the token
        service again (an access check must see a revocation, not a token issued before it)."""
        self._tokens.pop(self._token_key(upstream, scope))

    def cached(self, upstream: Upstream, scope: str) -> str | None:
        """An Authorization value known to be needed, if any is at hand without a request."""
        if isinstance(upstream.credential, RequesterBearer):
            return upstream.credential.authorization
        if upstream.ns in self._basic_only:
            pair = self._pair(upstream)
            return _basic(pair) if pair else None
        token = self._tokens.get(self._token_key(upstream, scope))
        if token and token[1] > time.monotonic():
            return token[0]
        return None

    async def prefetch(
        self, session: aiohttp.ClientSession, upstream: Upstream, scope: str
    ) -> str | None:
        """A token for a known realm before the first try (saves a 401 round trip)."""
        cached = self.cached(upstream, scope)
        if cached or upstream.ns not in self._realms:
            return cached
        return await self._token(session, upstream, self._realms[upstream.ns], scope)

    async def answer(
        self, session: aiohttp.ClientSession, upstream: Upstream, scope: str, header: str
    ) -> str | None:
        """The Authorization value that answers a 401 challenge, or None when none can."""
        if isinstance(upstream.credential, RequesterBearer):
            return None  # the client's token was refused: only the client can get another
        challenge = Challenge.parse(header)
        if challenge.scheme == "basic":
            self._basic_only.add(upstream.ns)
            pair = self._pair(upstream)
            return _basic(pair) if pair else None
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return None
        self._realms[upstream.ns] = challenge
        return await self._token(session, upstream, challenge, challenge.params.get("scope", scope))

    async def _token(
        self, session: aiohttp.ClientSession, upstream: Upstream, challenge: Challenge, scope: str
    ) -> str:
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {}
        pair = self._pair(upstream)
        realm = challenge.params["realm"]
        if pair and not _may_carry_credentials(realm, upstream):
            raise UpstreamUnavailable(
                "the registry's token service is neither https nor on the registry's own host:"
                " credentials are not sent there",
                {"registry": upstream.ns},
            )
        if pair:
            headers["Authorization"] = _basic(pair)
        try:
            async with session.get(realm, params=params, headers=headers) as response:
                if response.status in (401, 403):
                    raise UpstreamUnauthorized(
                        "the registry's token service refused the credentials",
                        {"registry": upstream.ns},
                    )
                if response.status != 200:
                    raise UpstreamUnavailable(
                        f"token service answered {response.status}", {"registry": upstream.ns}
                    )
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            if (reason := refusal(e)) is not None:
                raise UpstreamRefused(reason, {"registry": upstream.ns}) from None
            raise UpstreamUnavailable(
                f"token service failed: {e}", {"registry": upstream.ns}
            ) from None
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str):
            raise UpstreamUnavailable("token service sent no token", {"registry": upstream.ns})
        lifetime = max(
            float(document.get("expires_in") or DEFAULT_TOKEN_SECONDS), DEFAULT_TOKEN_SECONDS
        )
        value = "Bearer " + token
        expiry = time.monotonic() + lifetime - EXPIRY_MARGIN
        self._tokens.remember(self._token_key(upstream, scope), (value, expiry))
        return value


def _may_carry_credentials(realm: str, upstream: Upstream) -> bool:
    """Credentials travel to a token service over https, or in the clear only to the registry's
    own host (a registry and its token service on one machine) or to loopback."""
    parts = urlsplit(realm)
    if parts.scheme == "https":
        return True
    registry = urlsplit(upstream.base_url)
    return parts.hostname == registry.hostname or is_loopback_host(parts.netloc)
