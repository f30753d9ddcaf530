"""`doctor`: find out why containerd would pull around the node instead of through it.

A mirror that is silently bypassed is the commonest complaint about node-local mirrors: containerd
never reports that it fell back to the registry. So the checks follow containerd's own lookup, in
its order, and each failure names the fix:

1. containerd's config sets `config_path` (the CRI plugin, which the kubelet uses, reads no
   hosts.toml without it) and does not also use the deprecated `registry.mirrors`;
2. each registry's `hosts.toml` exists there, lists a host that may `pull` and `resolve`, with a
   short `dial_timeout`, and that host answers `/v2/`;
3. the node answers `GET /v2/` and `GET /readyz`, and has seeded every archive of its images
   directory (`GET /status` lists those it skipped, with the fix); the tracker answers gRPC
   health checks.
"""

from __future__ import annotations

import enum
import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from distributed_images.settings import as_given
from node.hostsconfig import DEFAULT_NAMESPACE, parse_duration, parse_target
from tracker import targets

__all__ = [
    "HELP",
    "Config",
    "Finding",
    "Level",
    "NetworkProbes",
    "StaticProbes",
    "diagnose",
    "main",
]

HELP = "check that this host's containerd pulls through a live node, and say how to fix it if not"
# Where each config version keeps the CRI registry settings; containerd 2.x (config version 3)
# reads these directories even when config_path is absent.
_CRI_REGISTRY = {
    1: ("cri",),
    2: ("io.containerd.grpc.v1.cri",),
    3: ("io.containerd.cri.v1.images",),
}
_V3_DEFAULT_PATH = "/etc/containerd/certs.d:/etc/docker/certs.d"
_DOCKER_HUB_ALIASES = ("registry-1.docker.io", "index.docker.io")
_SLOW_DIAL_SECONDS = 5.0
MAX_JSON_BYTES = 4 << 20


@dataclass
class Config:
    containerd_config: Path = field(
        default=Path("/etc/containerd/config.toml"),
        metadata={"help": "containerd's config file", "metavar": "FILE"},
    )
    hosts_dir: Path | None = field(
        default=None,
        metadata={"help": "where hosts.toml files are (default: config_path)", "metavar": "DIR"},
    )
    node: str = field(
        default="http://127.0.0.1:8080",
        metadata={"help": "the node's registry URL", "metavar": "URL"},
    )
    tracker: str | None = field(
        default=None,
        metadata={
            "parse": as_given(targets.parse),
            "help": "tracker to check (default: none, an embedded one)",
            "metavar": "HOST:PORT",
        },
    )
    registry: list[str] = field(
        default_factory=list,
        metadata={
            "parse": as_given(parse_target),
            "help": "a registry that must go through the node (repeatable; default: every "
            "hosts.toml found)",
            "metavar": "NS[=URL]",
        },
    )
    timeout: float = field(
        default=2.0, metadata={"above": 0, "help": "seconds to wait for each probe", "metavar": "S"}
    )


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    subject: str
    message: str
    fix: str = ""
    bypass: bool = True  # a failure that makes containerd pull around the node

    def render(self) -> str:
        text = f"{self.level.value:<5} {self.subject}: {self.message}"
        return text + (f"\n      fix: {self.fix}" if self.fix else "")


class Probes(Protocol):
    def http_status(self, url: str) -> int | None:
        """The status of a GET, or None when nothing answers."""

    def http_json(self, url: str) -> Any:
        """The JSON body of a GET answered 200, or None."""

    def grpc_health(self, target: str) -> str:
        """`SERVING`, another serving status, or the gRPC error code that came back."""


@dataclass
class NetworkProbes:
    timeout: float

    def http_status(self, url: str) -> int | None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
        try:
            with opener.open(url, timeout=self.timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            e.close()
            return int(e.code)
        except (OSError, ValueError):
            return None

    def http_json(self, url: str) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
        try:
            with opener.open(url, timeout=self.timeout) as response:
                return json.loads(response.read(MAX_JSON_BYTES))
        except (OSError, ValueError):
            return None

    def grpc_health(self, target: str) -> str:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        options = [("grpc.enable_http_proxy", 0)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
            except grpc.RpcError as e:
                return str(e.code().name)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@dataclass
class StaticProbes:
    """The in-memory twin of `NetworkProbes`: fixed answers, and no answer for anything else."""

    http: dict[str, int] = field(default_factory=dict)
    grpc: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)

    def http_status(self, url: str) -> int | None:
        return self.http.get(url)

    def http_json(self, url: str) -> Any:
        return self.json.get(url)

    def grpc_health(self, target: str) -> str:
        return self.grpc.get(target, "UNAVAILABLE")


def main(config: Config) -> int:
    findings = list(diagnose(config, NetworkProbes(config.timeout)))
    for finding in findings:
        print(finding.render())
    failures = [f for f in findings if f.level is Level.FAIL]
    if failures:
        bypassed = any(f.bypass for f in failures)
        consequence = "containerd would pull around the node" if bypassed else "fix them above"
        print(f"doctor: {len(failures)} problem(s): {consequence}")
        return 1
    print("doctor: containerd pulls through the node")
    return 0


def diagnose(config: Config, probes: Probes) -> Iterator[Finding]:
    dirs = yield from _check_containerd(config.containerd_config, config.hosts_dir)
    hosts_dir = config.hosts_dir or dirs[0]
    yield from _check_hosts_files(dirs, hosts_dir, config, probes)
    yield from _check_node(config.node.rstrip("/"), probes)
    yield from _check_tracker(config.tracker, probes)


# --- containerd's config.toml ----------------------------------------------------------------


def _check_containerd(path: Path, hosts_dir: Path | None) -> Generator[Finding, None, list[Path]]:
    """Yields findings; returns the directories containerd reads hosts.toml files from."""
    default_dirs = [hosts_dir or Path("/etc/containerd/certs.d")]
    subject = f"containerd config {path}"
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        yield Finding(
            Level.FAIL,
            subject,
            "not found: containerd 1.x then reads no hosts.toml at all",
            _config_path_fix(path, default_dirs[0]),
        )
        return default_dirs
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        yield Finding(Level.FAIL, subject, f"unreadable: {e}", "fix the file; containerd fails too")
        return default_dirs
    version = document.get("version", 1)
    registry = _table(document, ("plugins", *_CRI_REGISTRY.get(version, ()), "registry"))
    config_path = str(registry.get("config_path", _V3_DEFAULT_PATH if version == 3 else ""))
    if registry.get("mirrors"):
        yield _mirrors_finding(subject, bool(config_path), path, default_dirs[0])
    if not config_path:
        yield Finding(
            Level.FAIL,
            subject,
            "config_path is not set: the kubelet's pulls (CRI) ignore every hosts.toml",
            _config_path_fix(path, default_dirs[0]),
        )
        return default_dirs
    dirs = [Path(p) for p in config_path.split(":") if p]
    if hosts_dir is not None and hosts_dir not in dirs:
        yield Finding(
            Level.FAIL,
            subject,
            f"config_path is {config_path}, so containerd never reads {hosts_dir}",
            f"write the files there (containerd-config --hosts-dir {dirs[0]}) "
            f"or set config_path = {str(hosts_dir)!r}",
        )
        return dirs
    yield Finding(Level.OK, subject, f"config_path = {config_path}")
    return dirs


def _mirrors_finding(subject: str, has_config_path: bool, path: Path, hosts_dir: Path) -> Finding:
    if has_config_path:
        return Finding(
            Level.FAIL,
            subject,
            "sets both config_path and the deprecated registry.mirrors: the CRI plugin fails",
            f"delete the registry.mirrors tables from {path} and restart containerd",
        )
    return Finding(
        Level.WARN,
        subject,
        "uses the deprecated registry.mirrors instead of hosts.toml files",
        _config_path_fix(path, hosts_dir),
    )


def _config_path_fix(path: Path, hosts_dir: Path) -> str:
    return (
        f'in {path} set, under [plugins."io.containerd.grpc.v1.cri".registry] (config '
        f'version 2), config_path = "{hosts_dir}", then `systemctl restart containerd`'
    )


def _table(document: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    table: Any = document
    for key in keys:
        table = table.get(key, {}) if isinstance(table, dict) else {}
    return table if isinstance(table, dict) else {}


# --- hosts.toml files ------------------------------------------------------------------------


def _check_hosts_files(
    dirs: list[Path], hosts_dir: Path, config: Config, probes: Probes
) -> Iterator[Finding]:
    # NS=URL is accepted too, so the node's DI_REGISTRY can be reused as it is.
    namespaces = [r.partition("=")[0] for r in config.registry] or _namespaces_present(dirs)
    fix = f"distributed-images containerd-config --hosts-dir {hosts_dir} --mirror {config.node}"
    if not namespaces:
        yield Finding(
            Level.FAIL,
            f"hosts.toml in {hosts_dir}",
            "none found: containerd pulls every image straight from its registry",
            f"{fix} --registry docker.io --registry ...",
        )
        return
    for alias in _DOCKER_HUB_ALIASES:
        if alias in namespaces and "docker.io" not in namespaces:
            yield Finding(
                Level.WARN,
                f"hosts.toml for {alias}",
                "containerd looks Docker Hub images up under docker.io, not " + alias,
                f"{fix} --registry docker.io",
            )
    for ns in namespaces:
        path = _lookup(dirs, ns)
        if path is None:
            yield Finding(
                Level.FAIL,
                f"hosts.toml for {ns}",
                f"missing in {', '.join(map(str, dirs))}: pulls from {ns} bypass the node",
                f"{fix} --registry {ns}",
            )
            continue
        yield from _check_hosts_file(
            path, ns, config.node.rstrip("/"), probes, f"{fix} --registry {ns}"
        )


def _namespaces_present(dirs: list[Path]) -> list[str]:
    found = {p.parent.name for d in dirs if d.is_dir() for p in d.glob("*/hosts.toml")}
    return sorted(found)


def _lookup(dirs: list[Path], ns: str) -> Path | None:
    """containerd's order: the first directory that has `<ns>`, else the first with `_default`."""
    for name in (ns, DEFAULT_NAMESPACE):
        for d in dirs:
            if (d / name / "hosts.toml").is_file():
                return d / name / "hosts.toml"
    return None


def _check_hosts_file(
    path: Path, ns: str, node: str, probes: Probes, fix: str
) -> Iterator[Finding]:
    subject = f"hosts.toml for {ns} ({path})"
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        yield Finding(Level.FAIL, subject, f"unreadable: {e}: containerd ignores it", fix)
        return
    hosts = _table(document, ("host",))
    pulling = {url.rstrip("/"): t for url, t in hosts.items() if _may(t, "pull")}
    if str(document.get("server", "")).rstrip("/") in pulling:
        yield Finding(
            Level.WARN, subject, "server is the mirror itself: no fallback when it is down", fix
        )
    if not pulling:
        yield Finding(Level.FAIL, subject, "no [host] that may pull: the node is never asked", fix)
        return
    live = [url for url in pulling if probes.http_status(url + "/v2/") == 200]
    if not live:
        listed = ", ".join(pulling)
        yield Finding(
            Level.FAIL,
            subject,
            f"points at {listed}, which does not answer /v2/: containerd falls back silently",
            f"start the node there, or point the file at a live one: {fix}",
        )
        return
    first = next(iter(pulling))
    if live[0] != first:
        yield Finding(
            Level.WARN, subject, f"containerd tries {first} first, which does not answer", fix
        )
    yield from _check_host_settings(subject, live[0], pulling[live[0]], node, fix)


def _check_host_settings(
    subject: str, url: str, host: dict[str, Any], node: str, fix: str
) -> Iterator[Finding]:
    problems = 0
    if not _may(host, "resolve"):
        problems += 1
        yield Finding(Level.WARN, subject, f"{url} may not resolve: tags go to the registry", fix)
    dial = _seconds(host.get("dial_timeout"))
    if dial is None or dial >= _SLOW_DIAL_SECONDS:
        problems += 1
        yield Finding(
            Level.WARN,
            subject,
            f"{url} has no short dial_timeout: a dead node stalls pulls for up to 30 s",
            fix,
        )
    if url != node:
        yield Finding(Level.WARN, subject, f"uses {url}, not --node {node}: right if that is it")
    elif not problems:
        yield Finding(Level.OK, subject, f"pulls and resolves through {url}")


def _may(host: Any, capability: str) -> bool:
    # containerd's default for a [host] without capabilities is pull, resolve and push.
    return isinstance(host, dict) and capability in host.get("capabilities", ["pull", "resolve"])


def _seconds(text: Any) -> float | None:
    try:
        return parse_duration(text) if isinstance(text, str) else None
    except ValueError:
        return None


# --- the node and the tracker ----------------------------------------------------------------


def _check_node(node: str, probes: Probes) -> Iterator[Finding]:
    subject = f"node {node}"
    start = (
        "start it: `docker start distributed_images`, or look at the DaemonSet's pod on this "
        "host: `kubectl get pods -o wide -l app.kubernetes.io/component=node`"
    )
    api = probes.http_status(node + "/v2/")
    if api is None:
        yield Finding(
            Level.FAIL, subject, "not answering: pulls fall back to the registries", start
        )
        return
    if api != 200:
        yield Finding(
            Level.FAIL, subject, f"GET /v2/ answered {api}, not 200: is this a node?", start
        )
        return
    status = probes.http_json(node + "/status")
    status = status if isinstance(status, dict) else {}
    ready = probes.http_status(node + "/readyz")
    if ready != 200:
        why = f": {status['why']}" if isinstance(status.get("why"), str) else ""
        yield Finding(
            Level.FAIL,
            subject,
            f"up but not ready (GET /readyz answered {ready}){why}",
            "read the node's log: it reports what it is waiting for",
        )
        return
    yield Finding(Level.OK, subject, "answers /v2/ and is ready")
    yield from _check_archives(node, status)


def _check_archives(node: str, status: dict[str, Any]) -> Iterator[Finding]:
    """Archives of the node's images directory that it skipped: their images are not served."""
    archives = status.get("archives")
    skipped = archives.get("skipped") if isinstance(archives, dict) else None
    for entry in skipped if isinstance(skipped, list) else []:
        if isinstance(entry, dict):
            yield Finding(
                Level.FAIL,
                f"node {node}: archive {entry.get('name')}",
                f"skipped, its images are not served: {entry.get('reason')}",
                str(entry.get("fix") or ""),
                bypass=False,
            )


def _check_tracker(tracker: str | None, probes: Probes) -> Iterator[Finding]:
    if tracker is None:
        yield Finding(Level.OK, "tracker", "not checked (no --tracker: a node may embed one)")
        return
    status = probes.grpc_health(tracker)
    subject = f"tracker {tracker}"
    if status == "SERVING":
        yield Finding(Level.OK, subject, "gRPC health: SERVING")
        return
    yield Finding(
        Level.FAIL,
        subject,
        f"gRPC health: {status}: nodes find no peers and every pull goes upstream",
        "start the tracker (distributed-images tracker), or check the node's --tracker",
    )
