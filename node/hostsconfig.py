"""`containerd-config`: point containerd at the node by writing `<hosts-dir>/<NS>/hosts.toml`.

For each registry namespace the file names the registry itself as `server` (containerd's fallback)
and the node as a `[host]` that may `pull` and `resolve`, with a short `dial_timeout` so a node
that is down costs a pull a fraction of a second, not containerd's default of 30 s.

Invariants that make `--remove` safe to run any number of times:
- every file written here starts with `MARKER`, so ours are told apart from an operator's;
- a foreign file found at the target is copied to `hosts.toml.distributed-images.orig` (the
  newest foreign file wins) before ours replaces it; our own file is never backed up;
- `--remove` deletes only a file that carries `MARKER`, then renames the backup into place;
- every write is a temp file in the same directory, fsynced and renamed, so containerd never
  reads half a file (it rereads hosts.toml on every pull).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from distributed_images.settings import as_given
from node.errors import NameInvalid
from node.oci.reference import validate_namespace
from node.upstream.registries import http_url, is_loopback_host

__all__ = [
    "BACKUP_NAME",
    "HELP",
    "MARKER",
    "Config",
    "RegistryTarget",
    "main",
    "parse_target",
    "remove",
    "render",
    "write",
]

HELP = "write (or with --remove, restore) containerd hosts.toml files that point at a node"
MARKER = "# Written by distributed-images containerd-config"
BACKUP_NAME = "hosts.toml.distributed-images.orig"
DEFAULT_NAMESPACE = "_default"  # containerd's catch-all directory: every registry
# What may stand inside the quotes of a TOML string without escaping: no quotes, no spaces.
_URL = re.compile(r"https?://[^\s\"'\\]+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")
_DOCKER_HUB = ("docker.io", "https://registry-1.docker.io")

log = logging.getLogger("node.hostsconfig")


@dataclass(frozen=True)
class RegistryTarget:
    """One registry namespace and the URL containerd falls back to (None for `_default`)."""

    ns: str
    server: str | None


def parse_target(text: str) -> RegistryTarget:
    """`docker.io`, `ghcr.io=https://ghcr.io`, `127.0.0.1:5000` or `_default`."""
    ns, sep, url = text.partition("=")
    if ns == DEFAULT_NAMESPACE:
        if sep:
            raise ValueError("_default has no URL of its own: each registry is its own server")
        return RegistryTarget(ns, None)
    try:
        ns = validate_namespace(ns)
    except NameInvalid:
        raise ValueError(f"not a registry host[:port]: {ns!r}") from None
    if sep:
        if not _URL.fullmatch(url) or not http_url(url):
            raise ValueError(f"expected NS=URL with an http(s) URL, got {text!r}")
        return RegistryTarget(ns, url.rstrip("/"))
    return RegistryTarget(ns, default_server(ns))


@dataclass
class Config:
    hosts_dir: Path = field(
        default=Path("/etc/containerd/certs.d"),
        metadata={"help": "containerd's config_path directory", "metavar": "DIR"},
    )
    mirror: str = field(
        default="http://127.0.0.1:8080",
        metadata={"help": "the node's registry URL, as containerd reaches it", "metavar": "URL"},
    )
    registry: list[str] = field(
        default_factory=list,
        metadata={
            "parse": as_given(parse_target),
            "help": "a registry to send through the node, NS or NS=URL (repeatable; "
            "_default: every registry)",
            "metavar": "NS[=URL]",
        },
    )
    dial_timeout: str = field(
        default="200ms",
        metadata={"help": "how long containerd waits to connect to the node", "metavar": "D"},
    )
    remove: bool = field(
        default=False, metadata={"help": "remove our files and restore the ones they replaced"}
    )


def parse_duration(text: str) -> float:
    """Seconds in a Go duration as containerd reads it: `200ms`, `1s`, `1.5s`, `2m`."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a duration like 200ms or 1s: {text!r}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def default_server(ns: str) -> str:
    """The registry's own URL: Docker Hub's API host, plain HTTP for loopback, else https."""
    if ns == _DOCKER_HUB[0]:
        return _DOCKER_HUB[1]
    return f"{'http' if is_loopback_host(ns) else 'https'}://{ns}"


def render(target: RegistryTarget, mirror: str, dial_timeout: str) -> str:
    lines = [f"{MARKER}; `--remove` restores the file it replaced ({BACKUP_NAME})."]
    if target.server is not None:
        lines.append(f'server = "{target.server}"')
    lines += [
        "",
        f'[host."{mirror}"]',
        '  capabilities = ["pull", "resolve"]',
        f'  dial_timeout = "{dial_timeout}"',
        "",
    ]
    return "\n".join(lines)


def is_ours(path: Path) -> bool:
    try:
        return path.read_text(errors="replace").startswith(MARKER)
    except FileNotFoundError:
        return False


def write(hosts_dir: Path, target: RegistryTarget, mirror: str, dial_timeout: str) -> Path:
    directory = hosts_dir / target.ns
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    if path.exists() and not is_ours(path):
        # Copy, not rename: containerd must see a hosts.toml at every instant.
        _atomic_write(directory / BACKUP_NAME, path.read_bytes())
        log.info("backed up %s to %s", path, BACKUP_NAME)
    _atomic_write(path, render(target, mirror, dial_timeout).encode())
    return path


def remove(hosts_dir: Path, ns: str) -> str:
    """Undo `write` for one namespace; returns what was done, for the operator."""
    directory = hosts_dir / ns
    path, backup = directory / "hosts.toml", directory / BACKUP_NAME
    if path.exists() and not is_ours(path):
        return f"left {path} alone: it was not written by containerd-config"
    if backup.exists():
        os.replace(backup, path)
        return f"restored {path}"
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if empty: other files there belong to someone else
    return f"removed {path}"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_mirror(url: str) -> str:
    if not _URL.fullmatch(url) or not http_url(url) or "/" in url.split("://", 1)[1].rstrip("/"):
        raise ValueError(f"--mirror must be a scheme and host, like http://127.0.0.1:8080: {url!r}")
    return url.rstrip("/")


def main(config: Config) -> int:
    try:
        mirror = _check_mirror(config.mirror)
        dial_timeout = config.dial_timeout.strip()
        parse_duration(dial_timeout)
        targets = [parse_target(text) for text in config.registry]
    except ValueError as e:
        print(f"containerd-config: {e}")
        return 2
    if not targets:
        print("containerd-config: name at least one --registry NS[=URL] (or _default)")
        return 2
    for target in targets:
        if config.remove:
            print(remove(config.hosts_dir, target.ns))
        else:
            path = write(config.hosts_dir, target, mirror, dial_timeout)
            fallback = target.server or "each registry itself"
            print(f"wrote {path}: pulls go to {mirror}, falling back to {fallback}")
    return 0
