"""Which upstream serves a namespace, and how a repository is named there."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from node.oci.reference import validate_namespace

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_BUILT_IN = {DOCKER_HUB: "https://registry-1.docker.io"}


@dataclass(frozen=True)
class Upstream:
    ns: str
    base_url: str

    @property
    def is_docker_hub(self) -> bool:
        return self.ns in _DOCKER_HUB_ALIASES

    def repository(self, name: str) -> str:
        """Docker Hub's official images live under `library/`: `nginx` is `library/nginx`."""
        if self.is_docker_hub and "/" not in name:
            return "library/" + name
        return name


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


def parse_mapping(text: str) -> tuple[str, str]:
    ns, sep, url = text.partition("=")
    if not sep or not ns or not url.startswith(("http://", "https://")):
        raise ValueError(f"expected NS=URL with an http(s) URL, got {text!r}")
    return validate_namespace(ns), url.rstrip("/")


class Registries:
    """`--registry NS=URL` mappings; an unmapped namespace is reached at https://<ns>, except
    loopback hosts, which are reached over plain HTTP."""

    def __init__(self, mappings: list[str], default_ns: str) -> None:
        self._urls = dict(_BUILT_IN)
        self._urls.update(parse_mapping(m) for m in mappings)
        self.default_ns = validate_namespace(default_ns)

    def resolve(self, ns: str | None) -> Upstream:
        ns = validate_namespace(ns) if ns else self.default_ns
        if ns in _DOCKER_HUB_ALIASES:
            return Upstream(DOCKER_HUB, self._urls[DOCKER_HUB])
        if ns in self._urls:
            return Upstream(ns, self._urls[ns])
        scheme = "http" if is_loopback_host(ns) else "https"
        return Upstream(ns, f"{scheme}://{ns}")
