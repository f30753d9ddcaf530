"""A real upstream: Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port.

Three shapes: a plain registry, a pull-through cache (`proxy.remoteurl`, the baseline the
benchmarks compare against), and a registry behind token auth (`auth.token`, with the token server
of `tests.support.tokenserver`). The registry logs in JSON to stderr; each request ends with one
"response completed" line carrying method, URI, status and `http.response.written`, which is how
tests count what reached the upstream:

    mark = registry.mark()
    ...pull through a node...
    assert len(registry.blob_fetches(digest, since=mark)) == 1
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from tests.support.process import LOOPBACK, Daemon, free_port, http_status, wait_until

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class TokenAuth:
    """The registry side of token auth: who issues tokens, and the certificate they chain to."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class AccessLogEntry:
    method: str
    uri: str
    status: int
    written: int
    user_agent: str

    @property
    def path(self) -> str:
        return self.uri.partition("?")[0]

    def is_blob(self, digest: str | None = None) -> bool:
        parts = self.path.split("/")
        return len(parts) >= 4 and parts[-2] == "blobs" and digest in (None, parts[-1])

    def is_manifest(self, reference: str | None = None) -> bool:
        parts = self.path.split("/")
        return len(parts) >= 4 and parts[-2] == "manifests" and reference in (None, parts[-1])


class Registry:
    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "registry",
        proxy_remote: str | None = None,
        token_auth: TokenAuth | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"{LOOPBACK}:{self.port}"
        self.url = f"http://{self.host}"
        self.proxy_remote = proxy_remote
        self.token_auth = token_auth
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yml"
        self.config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        self._daemon = Daemon(name, ["docker-registry", "serve", str(self.config_path)], workdir)

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "fields": {"service": "registry"}},
            "storage": {
                "cache": {"blobdescriptor": "inmemory"},
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "tests-only-secret"},
        }
        if self.proxy_remote:
            config["proxy"] = {"remoteurl": self.proxy_remote}
        if self.token_auth:
            auth = self.token_auth
            config["auth"] = {
                "token": {
                    "realm": auth.realm,
                    "service": auth.service,
                    "issuer": auth.issuer,
                    "rootcertbundle": str(auth.rootcertbundle),
                }
            }
        return config

    @property
    def log_path(self) -> Path:
        return self._daemon.stderr_path

    @property
    def running(self) -> bool:
        return self._daemon.running

    def start(self) -> None:
        """Start (or restart, same port and data) and wait until `/v2/` answers."""
        self._daemon.start()
        wait_until(
            self._answers,
            START_TIMEOUT,
            f"registry on {self.host} answering /v2/",
            on_timeout=self._daemon.log_tail,
        )

    def _answers(self) -> bool:
        if not self._daemon.running:
            raise RuntimeError(self._daemon.describe_exit())
        # With token auth, an anonymous /v2/ is a 401 challenge: that is an answer too.
        return http_status(f"{self.url}/v2/", timeout=1.0) in (200, 401)

    def stop(self) -> None:
        self._daemon.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self._daemon.log_tail(lines)

    # The access log.

    def entries(self, since: int = 0) -> list[AccessLogEntry]:
        """Every finished request, in order; `since` skips the first entries (see `mark`)."""
        found = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            entry = _parse(line)
            if entry is not None:
                found.append(entry)
        return found[since:]

    def denied(self) -> list[AccessLogEntry]:
        """Requests refused for want of authorization, in order (as status 401). The registry
        logs them apart: an "error authorizing context" line, never a "response completed" one,
        so `entries` does not list them."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [e for e in map(_parse_denied, lines) if e is not None]

    def mark(self) -> int:
        """A position in the access log; pass it as `since` to see only later requests."""
        return len(self.entries())

    def blob_fetches(self, digest: str, since: int = 0) -> list[AccessLogEntry]:
        """The GET requests of that blob (with the bytes the registry wrote for each)."""
        return [e for e in self.entries(since) if e.method == "GET" and e.is_blob(digest)]

    def blob_bytes_written(self, since: int = 0) -> int:
        """Total bytes the registry wrote for blob GETs: the upstream egress of a pull."""
        return sum(e.written for e in self.entries(since) if e.method == "GET" and e.is_blob())

    def manifest_requests(
        self, reference: str | None = None, since: int = 0
    ) -> list[AccessLogEntry]:
        return [e for e in self.entries(since) if e.is_manifest(reference)]


async def upstream_blob_bytes(registry: Registry, since: int, digests: list[str]) -> dict[str, int]:
    """Bytes the registry wrote per blob for GETs after `since` (for a Range GET it writes only
    the range). A request is logged just after its last byte left: read until two reads agree."""
    previous: dict[str, int] | None = None
    while True:
        entries = [e for e in registry.entries(since) if e.method == "GET" and e.is_blob()]
        written = {d: sum(e.written for e in entries if e.is_blob(d)) for d in digests}
        if written == previous:
            return written
        previous = written
        await asyncio.sleep(0.3)


def _parse(line: str) -> AccessLogEntry | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not str(record.get("msg", "")).startswith("response completed"):
        return None
    return AccessLogEntry(
        method=record.get("http.request.method", ""),
        uri=record.get("http.request.uri", ""),
        status=int(record.get("http.response.status", 0)),
        written=int(record.get("http.response.written", 0)),
        user_agent=record.get("http.request.useragent", ""),
    )


def _parse_denied(line: str) -> AccessLogEntry | None:
    if "error authorizing context" not in line or not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return AccessLogEntry(
        method=record.get("http.request.method", ""),
        uri=record.get("http.request.uri", ""),
        status=401,
        written=0,
        user_agent=record.get("http.request.useragent", ""),
    )
