"""A real cluster for integration tests: one `distributed-images tracker` on 127.0.0.1 (or several
replicas sharing a Redis store) and nodes on distinct loopback addresses (127.0.0.11, .12, ...),
each with its own data dir and ports.

    cluster = Cluster(tmp / "cluster", {upstream.host: upstream.url}, upstream.host, size=4)
    cluster.start()            # tracker healthy, every node ready and joined to it
    cluster.nodes[0].url       # each node is a `tests.support.node.Node`
    cluster.tracker.kill()
    cluster.stop()             # every process, SIGTERM then SIGKILL; safe to call twice

The tracker runs with short heartbeats and a short node TTL, so a killed node is forgotten within
seconds rather than the production default's quarter of a minute. As in production, it holds a
cluster secret, each node its own credential (node i is `node<i>`), and the nodes listed in
`seeders` may announce seeded tags. With `replicas=2, store=redis.url`, `cluster.trackers` are two
replicas sharing the secret; every node knows both (`--tracker a,b`), node i replica i % 2 first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from node.store.chunking import chunk_count
from tests.support.images import OCI_MANIFEST, OciImage
from tests.support.node import Metrics, Node, parse_metrics
from tests.support.process import (
    LOOPBACK,
    Daemon,
    free_port,
    http_get,
    http_status,
    run,
    wait_until,
)
from tracker.credentials import Role, issue, new_secret

CLI = [sys.executable, "-m", "distributed_images.cli"]
# The checkout these tests belong to: the tracker imports it first, whatever copy of the package
# pip installed (tests.support.node does the same for nodes).
CHECKOUT = Path(__file__).resolve().parents[2]
NODE_HOSTS = tuple(f"127.0.0.{11 + i}" for i in range(8))
START_TIMEOUT = 30.0
HEARTBEAT_INTERVAL = 0.5
NODE_TTL = 3.0
WAIT_TIMEOUT = 60.0  # for a cluster to show what a test waits for


def process_environment() -> dict[str, str]:
    """The environment of the tracker and the CLI: without the DI_* variables of the machine
    running the tests, and with this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH")]))
    return env


def write_secret(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class Tracker:
    """A `distributed-images tracker` process on free ports of 127.0.0.1 that requires
    credentials derived from `secret`; `credential(role, name)` issues them."""

    def __init__(
        self,
        workdir: Path,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        node_ttl: float = NODE_TTL,
        extra_args: Sequence[str] = (),
        name: str = "tracker",
        secret: bytes | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
    ) -> None:
        """Replicas of one cluster share `secret` (a new one when not given); a replica listens
        on `host`, on `port` if given (replicas behind one name share a port)."""
        self.workdir = workdir
        self.secret = secret or new_secret()
        secret_file = write_secret(workdir / "secret", self.secret)
        self.operator_file = write_secret(
            workdir / "operator.cred", self.credential(Role.OPERATOR, "tests").encode()
        )
        self.port = port or free_port(host)
        self.http_port = free_port(host)
        self.address = f"{host}:{self.port}"
        self.http_url = f"http://{host}:{self.http_port}"
        argv = [
            *CLI,
            "tracker",
            "--listen",
            self.address,
            "--http-listen",
            f"{host}:{self.http_port}",
            "--heartbeat-interval",
            str(heartbeat_interval),
            "--node-ttl",
            str(node_ttl),
            "--log-level",
            "debug",
            "--secret-file",
            str(secret_file),
            *extra_args,
        ]
        self._daemon = Daemon(name, argv, workdir, env=process_environment(), cwd=workdir)

    def credential(self, role: Role, name: str) -> str:
        return issue(self.secret, role, name)

    def credential_file(self, node_id: str) -> Path:
        """A file holding node `node_id`'s credential, as an operator hands it to that node."""
        return write_secret(
            self.workdir / f"{node_id}.cred", self.credential(Role.NODE, node_id).encode()
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._daemon.start()
        wait_until(
            self._healthy,
            timeout,
            f"tracker on {self.address} healthy",
            on_timeout=self._daemon.log_tail,
        )

    def _healthy(self) -> bool:
        if not self._daemon.running:
            raise RuntimeError(f"tracker did not start:\n{self._daemon.describe_exit()}")
        return http_status(f"{self.http_url}/healthz", timeout=1.0) == 200

    def stop(self) -> int | None:
        return self._daemon.stop()

    def kill(self) -> None:
        self._daemon.kill()

    def signal(self, signum: int) -> None:
        """Send the process a signal (SIGSTOP freezes it: it answers nothing, closes nothing)."""
        self._daemon.signal(signum)

    @property
    def running(self) -> bool:
        return self._daemon.running

    @property
    def log_path(self) -> Path:
        return self._daemon.stderr_path

    def log_tail(self, lines: int = 80) -> str:
        return self._daemon.log_tail(lines)

    def metrics(self) -> Metrics:
        return parse_metrics(http_get(f"{self.http_url}/metrics").decode())

    def status(self, *flags: str) -> dict[str, object]:
        """What `distributed-images status --tracker ... --json [flags]` prints."""
        argv = [*CLI, "status", "--tracker", self.address, "--json", *flags]
        argv += ["--credential-file", str(self.operator_file)]
        result = run(argv, env=process_environment())
        status: dict[str, object] = json.loads(result.stdout)
        return status


class Cluster:
    """A tracker and `size` nodes, node i on NODE_HOSTS[i] with id `node<i>`; `node_args[i]` adds
    flags to node i, `data_dirs[i]` is its data dir; the nodes of `seeders` (indices) may
    announce seeded tags."""

    def __init__(
        self,
        workdir: Path,
        registries: Mapping[str, str],
        default: str,
        *,
        size: int = 4,
        node_args: Mapping[int, Sequence[str]] | None = None,
        data_dirs: Mapping[int, Path] | None = None,
        tracker_args: Sequence[str] = (),
        seeders: Sequence[int] = (),
        replicas: int = 1,
        store: str | None = None,
    ) -> None:
        assert size <= len(NODE_HOSTS)
        assert replicas == 1 or store, "tracker replicas share a store"
        self.workdir = workdir
        seeding = [arg for i in seeders for arg in ("--seeder", f"node{i}")]
        args = [*seeding, *(("--store", store) if store else ()), *tracker_args]
        self.tracker = Tracker(workdir / "tracker", extra_args=args)
        self.trackers = [self.tracker] + [
            Tracker(
                workdir / f"tracker{r}",
                extra_args=args,
                name=f"tracker{r}",
                secret=self.tracker.secret,
            )
            for r in range(1, replicas)
        ]
        node_args = node_args or {}
        data_dirs = data_dirs or {}
        self.nodes = [
            Node(
                workdir / f"node{i}",
                registries,
                default,
                extra_args=[
                    "--tracker",
                    self._trackers_for(i),
                    "--credential-file",
                    str(self.tracker.credential_file(f"node{i}")),
                    *node_args.get(i, ()),
                ],
                name=f"node{i}",
                host=host,
                data_dir=data_dirs.get(i),
            )
            for i, host in enumerate(NODE_HOSTS[:size])
        ]

    def _trackers_for(self, i: int) -> str:
        """Node i knows every replica, replica i % n first: the nodes split between them."""
        addresses = [t.address for t in self.trackers]
        first = i % len(addresses)
        return ",".join(addresses[first:] + addresses[:first])

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the trackers, then every node at once; return when all have joined."""
        for tracker in self.trackers:
            tracker.start(timeout)
        _each(self.nodes, lambda node: node.start(timeout))
        wait_until(
            self._all_joined,
            timeout,
            f"{len(self.nodes)} nodes joined to the tracker",
            on_timeout=self.log_tails,
        )

    def _all_joined(self) -> bool:
        """The tracker counts every node, and every node has heard back that it joined."""
        if self.tracker.metrics().sum("distributed_images_tracker_nodes") != len(self.nodes):
            return False
        return all("joined the cluster" in node.log_path.read_text() for node in self.nodes)

    def stop(self) -> None:
        _each(self.nodes, lambda node: node.stop())
        for tracker in self.trackers:
            tracker.stop()

    def holders(self, digests: Iterable[str]) -> dict[str, int]:
        """How many nodes hold each blob whole, as the tracker shows it."""
        blobs = self.tracker.status("--blobs").get("blobs", [])
        assert isinstance(blobs, list)
        found = {blob["digest"]: blob["holders"] for blob in blobs}
        return {digest: found.get(digest, 0) for digest in digests}

    def log_tails(self, lines: int = 80) -> str:
        tails = [t.log_tail(lines) for t in self.trackers]
        tails += [node.log_tail(lines) for node in self.nodes]
        return "\n".join(tails)


def _each(nodes: Sequence[Node], action: Callable[[Node], object]) -> None:
    """Run `action` on every node at once (a node takes a second or two to start or stop)."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        for future in [pool.submit(action, node) for node in nodes]:
            future.result()


def chunk_file(node: Node, digest: str, index: int) -> Path:
    """Where a node keeps chunk `index` of a complete blob:
    `<data-dir>/blobs/sha256/<2 hex>/<hex>/<hex>.<index>` (DESIGN section 4)."""
    hex_digest = digest.removeprefix("sha256:")
    return blob_directory(node, digest) / f"{hex_digest}.{index}"


def blob_directory(node: Node, digest: str) -> Path:
    """Where a node keeps a stored blob's chunk files."""
    hex_digest = digest.removeprefix("sha256:")
    return node.data_dir / "blobs" / "sha256" / hex_digest[:2] / hex_digest


def stored_bytes(node: Node, digest: str, size: int) -> bytes:
    """The blob as the chunk files in the node's store hold it."""
    return b"".join(chunk_file(node, digest, i).read_bytes() for i in range(chunk_count(size)))


async def stored(node: Node, digest: str) -> None:
    """Wait until the node has put a blob it served in its store: a client gets a blob's last
    bytes once its digest is verified, while the node still puts it on disk and publishes it
    (its directory appears whole, with every chunk file)."""
    await until(blob_directory(node, digest).is_dir, f"{node.name} stored {digest}", 0.02)


def receiving(node: Node, digest: str) -> bool:
    """Whether bytes of the blob have landed in the node's temporary area (where chunks arrive,
    `<data-dir>/tmp/<download>/<hex>.<index>`, before the blob is verified and stored)."""
    hex_digest = digest.removeprefix("sha256:")
    pattern = f"*/{hex_digest}.*"
    for _ in range(3):
        try:
            return any(_size(path) > 0 for path in (node.data_dir / "tmp").glob(pattern))
        except FileNotFoundError:  # a download ended while its directory was listed: look again
            continue
    return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # the blob was stored meanwhile
        return 0


# -- a client pulling an image from a node over HTTP, hashing what it receives


@dataclass(frozen=True)
class Received:
    """What a client got for one blob: the status, the sha256 of the body as it streamed in
    (or what broke the transfer) and the body's length."""

    status: int
    digest: str
    length: int


@dataclass(frozen=True)
class PulledImage:
    manifest: str  # the sha256 of the manifest bytes received
    blobs: dict[str, Received]  # the digest asked for -> what came back


async def pull_image(
    session: aiohttp.ClientSession,
    node: Node,
    reference: str,
    progress: MutableMapping[str, int] | None = None,
) -> PulledImage:
    """GET the manifest of `reference` (`name:tag`) from the node, then the config and every
    layer at once, as a registry client does. `progress` (if given) counts the bytes received
    so far per blob digest."""
    repository, _, tag = reference.rpartition(":")
    url = f"{node.url}/v2/{repository}"
    async with session.get(f"{url}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}) as response:
        assert response.status == 200, f"{node.name}: manifest: {response.status}"
        body = await response.read()
    manifest = json.loads(body)
    digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    progress = progress if progress is not None else {}
    results = await asyncio.gather(*(_blob(session, url, d, progress) for d in digests))
    blobs = dict(zip(digests, results, strict=True))
    return PulledImage("sha256:" + hashlib.sha256(body).hexdigest(), blobs)


async def _blob(
    session: aiohttp.ClientSession, url: str, digest: str, progress: MutableMapping[str, int]
) -> Received:
    sha256 = hashlib.sha256()
    progress[digest] = 0
    async with session.get(f"{url}/blobs/{digest}") as response:
        try:
            async for block in response.content.iter_chunked(1 << 20):
                sha256.update(block)
                progress[digest] += len(block)
        except aiohttp.ClientPayloadError as e:
            return Received(response.status, f"broken transfer: {e!r}", progress[digest])
        return Received(response.status, "sha256:" + sha256.hexdigest(), progress[digest])


@asynccontextmanager
async def client(timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    """A session for pulls from every node at once: no connection limit, `timeout` in all."""
    connector = aiohttp.TCPConnector(limit=0)
    total = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=total) as session:
        yield session


def correct(image: OciImage) -> dict[str, Received]:
    """What a client must receive for each blob of the image: 200 and exactly its bytes."""
    return {digest: Received(200, digest, size) for digest, size in image.image().blobs.items()}


async def until(condition: Callable[[], bool], what: str, interval: float = 0.1) -> None:
    """Poll `condition` (in a thread: it may ask a node over HTTP) until it holds."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"never true after {WAIT_TIMEOUT:.0f} s: {what}"
        await asyncio.sleep(interval)
