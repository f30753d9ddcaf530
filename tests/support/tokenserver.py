"""A token server for distribution's token auth, small enough to read in one sitting.

`GET /token?service=S&scope=repository:NAME:pull,push` with optional Basic credentials returns
`{"token", "access_token", "expires_in", "issued_at"}`: a JWT signed RS256 by a self-signed
certificate's key, with the certificate in the header's `x5c` (the registry trusts it through
`rootcertbundle`). Policy: anyone may pull a public repository; a known user may pull and push
everything, unless `grants` names the repositories it may pull (and then it may push nothing);
wrong credentials are refused with 401, as Docker Hub's token service does. `revoke` takes a
user's grants away while the server runs.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.httpserver import BackgroundServer
from tests.support.registry import Registry, TokenAuth

SERVICE = "test-registry"
ISSUER = "test-token-issuer"
TOKEN_SECONDS = 300


@dataclass(frozen=True)
class TokenRequest:
    account: str | None  # the Basic user, None when anonymous
    scopes: tuple[str, ...]
    status: int


@dataclass
class TokenPolicy:
    users: dict[str, str]  # user -> password
    public: set[str]  # repositories anyone may pull
    grants: dict[str, set[str]] = field(default_factory=dict)  # user -> repositories it may pull


@dataclass
class _Signer:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def self_signed(cls) -> _Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def sign(self, claims: dict[str, object]) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """The token service of one registry; `requests` records every token request it answered."""

    policy: TokenPolicy
    workdir: Path
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._signer = _Signer.self_signed()
        self._lock = threading.Lock()
        self._server = BackgroundServer(self._application)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.certificate_path = self.workdir / "token-signer.pem"
        pem = self._signer.certificate.public_bytes(serialization.Encoding.PEM)
        self.certificate_path.write_bytes(pem)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def realm(self) -> str:
        return f"{self._server.url}/token"

    def registry_auth(self) -> TokenAuth:
        return TokenAuth(self.realm, SERVICE, ISSUER, self.certificate_path)

    def requests_snapshot(self) -> list[TokenRequest]:
        with self._lock:
            return list(self.requests)

    def revoke(self, user: str) -> None:
        """From now on the user may pull nothing but public repositories."""
        with self._lock:
            self.policy.grants[user] = set()

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        scopes = tuple(request.query.getall("scope", []))
        account, valid = self._authenticate(request.headers.get("Authorization"))
        if not valid:
            self._record(TokenRequest(account, scopes, 401))
            error = {"code": "UNAUTHORIZED", "message": "incorrect username or password"}
            return web.json_response({"errors": [error]}, status=401)
        access = [granted for scope in scopes if (granted := self._grant(scope, account))]
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": account or "",
            "aud": request.query.get("service", SERVICE),
            "exp": now + TOKEN_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self._signer.sign(claims)
        self._record(TokenRequest(account, scopes, 200))
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
        body = {"token": token, "access_token": token, "expires_in": TOKEN_SECONDS}
        return web.json_response({**body, "issued_at": issued})

    def _record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _authenticate(self, header: str | None) -> tuple[str | None, bool]:
        """(account, valid): anonymous is valid; a user with a wrong password is not."""
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        return user, self.policy.users.get(user) == password

    def _grant(self, scope: str, account: str | None) -> dict[str, object] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        wanted = set(actions.split(","))
        with self._lock:
            granted = self.policy.grants.get(account or "")
        if granted is not None:
            allowed = wanted & {"pull"} if name in granted | self.policy.public else set()
        elif account is not None:
            allowed = wanted & {"pull", "push"}
        elif name in self.policy.public:
            allowed = wanted & {"pull"}
        else:
            allowed = set()
        return {"type": "repository", "name": name, "actions": sorted(allowed)}


class TokenRegistry:
    """A registry behind token auth, with its token server: `public` is readable anonymously,
    `private` only with `user:password` (`creds`)."""

    user = "alice"
    password = "s3cret-Pa55"
    public = "test/public"
    private = "test/private"

    def __init__(self, workdir: Path) -> None:
        self.tokens = TokenServer(TokenPolicy({self.user: self.password}, {self.public}), workdir)
        self._workdir = workdir
        self.registry: Registry | None = None

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.password}"

    def start(self) -> Registry:
        self.tokens.start()
        self.registry = Registry(
            self._workdir, name="token-registry", token_auth=self.tokens.registry_auth()
        )
        self.registry.start()
        return self.registry

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
        self.tokens.stop()
