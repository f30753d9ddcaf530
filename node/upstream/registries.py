"""Which registries a node mirrors, where each is reached, and how a repository is named there.

A node mirrors only the registries it is configured for: the `--registry NS=URL` entries, its
`--default-registry`, and the well-known public registries of `--public-registries`. Any other
`ns` a client names is `RegistryNotMirrored` (404 NAME_UNKNOWN): containerd and podman then pull
from that registry themselves, and the node never connects to a host a client chose.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from node.errors import NameInvalid, RegistryNotMirrored
from node.oci.reference import validate_namespace
from node.upstream.credential import NODE, Credential

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_BUILT_IN = {DOCKER_HUB: "https://registry-1.docker.io"}
# Registries that serve public images to anyone, mirrored without a --registry entry.
PUBLIC_REGISTRIES = (
    "docker.io",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "nvcr.io",
    "registry.gitlab.com",
)


@dataclass(frozen=True)
class Upstream:
    ns: str
    base_url: str
    # The operator named this registry's URL (--registry, --default-registry): it may sit on a
    # private network, which its connections may then reach (`node.upstream.reach`).
    configured: bool = False
    # Whose credentials requests to this upstream carry (node.access binds a client's), and
    # whether the node's own (--auth-file) may never serve clients here (--requester-only).
    credential: Credential = field(default=NODE, compare=False, repr=False)
    requester_only: bool = False

    def with_credential(self, credential: Credential) -> Upstream:
        return dataclasses.replace(self, credential=credential)

    @property
    def is_docker_hub(self) -> bool:
        return self.ns == DOCKER_HUB

    def repository(self, name: str) -> str:
        return repository(self.ns, name)


def repository(ns: str, name: str) -> str:
    """Docker Hub's official images live under `library/`: `nginx` is `library/nginx`."""
    if ns == DOCKER_HUB and "/" not in name:
        return "library/" + name
    return name


def canonical(ns: str) -> str:
    """The one name of a registry: host names are case-insensitive, Docker Hub has aliases."""
    ns = ns.lower()
    return DOCKER_HUB if ns in _DOCKER_HUB_ALIASES else ns


def is_loopback_host(host: str) -> bool:
    """`127.0.0.1:5000`, `localhost`, `[::1]:5000` are loopback; names are not resolved."""
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        hostname = host.partition(":")[0]
    else:
        hostname = host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def default_url(ns: str) -> str:
    """Where a registry is reached without a --registry URL: https, plain HTTP on loopback."""
    if ns in _BUILT_IN:
        return _BUILT_IN[ns]
    return f"{'http' if is_loopback_host(ns) else 'https'}://{ns}"


def parse_namespace(text: str) -> str:
    """A registry host[:port] from the command line (ValueError when it is none)."""
    try:
        return validate_namespace(text)
    except NameInvalid:
        raise ValueError(f"not a registry host[:port]: {text[:255]!r}") from None


def parse_mapping(text: str) -> tuple[str, str]:
    ns, sep, url = text.partition("=")
    if not sep or not ns or not http_url(url):
        raise ValueError(f"expected NS=URL with an http(s) URL, got {text!r}")
    return parse_namespace(ns), url.rstrip("/")


def http_url(url: str) -> bool:
    """An http(s) URL with a host, and a port that is one (urllib checks it when read)."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range or not a number, a [ without its ]
        return False


class Registries:
    """The registries this node mirrors, by `ns`."""

    def __init__(
        self,
        mappings: list[str],
        default_ns: str,
        public: Iterable[str] = PUBLIC_REGISTRIES,
        requester_only: Iterable[str] = (),
    ) -> None:
        only = {n if n == "*" else canonical(validate_namespace(n)) for n in requester_only}
        self._upstreams: dict[str, Upstream] = {}
        for ns in public:
            ns = canonical(validate_namespace(ns))
            self._upstreams[ns] = Upstream(ns, default_url(ns))
        for mapping in mappings:
            ns, url = parse_mapping(mapping)
            self._upstreams[canonical(ns)] = Upstream(canonical(ns), url, configured=True)
        self.default_ns = canonical(validate_namespace(default_ns))
        if self.default_ns not in self._upstreams:
            configured = self.default_ns not in PUBLIC_REGISTRIES
            url = default_url(self.default_ns)
            self._upstreams[self.default_ns] = Upstream(self.default_ns, url, configured)
        for ns, upstream in self._upstreams.items():
            if "*" in only or ns in only:
                self._upstreams[ns] = dataclasses.replace(upstream, requester_only=True)

    def resolve(self, ns: str | None) -> Upstream:
        """The upstream of `ns` (None: the default registry); RegistryNotMirrored for one this
        node is not configured for."""
        key = canonical(validate_namespace(ns)) if ns else self.default_ns
        upstream = self._upstreams.get(key)
        if upstream is None:
            raise RegistryNotMirrored(
                "this node does not mirror that registry: pull it from the registry itself",
                {"ns": ns},
            )
        return upstream

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams.values())
