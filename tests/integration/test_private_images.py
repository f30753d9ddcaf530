"""Private images: a node serves cached private content only to clients that can read it upstream.

One token-auth upstream for the module (Debian's `docker-registry` with the token server of
`tests.support.tokenserver`): `alice` may pull `alice/app`, `bob` may pull `bob/app`, `carol` may
pull `alice/app` until a test revokes her, and anyone may pull `test/public`. Each repository
holds an image of its own, so no digest of one is found in another. Real clients (skopeo, podman,
containerd's ctr and its CRI plugin) pull through real nodes, alone or in a cluster.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web

from tests.support import cri, images, outcome, skopeo
from tests.support.cluster import Cluster
from tests.support.containerd import Containerd, write_hosts_toml
from tests.support.httpserver import BackgroundServer
from tests.support.images import KiB, LayerSpec, MiB, OciImage
from tests.support.node import Node, write_auth_file
from tests.support.podman import Podman
from tests.support.process import CommandFailed, http_get
from tests.support.registry import Registry
from tests.support.tokenserver import TokenPolicy, TokenServer

pytestmark = pytest.mark.integration

ADMIN = ("admin", "adm1n-Pa55-x9")
ALICE = ("alice", "al1ce-S3cret-4f7q")
BOB = ("bob", "b0b-S3cret-8k2w")
CAROL = ("carol", "car0l-S3cret-1m5z")
ALICE_REPO, BOB_REPO, PUBLIC_REPO = "alice/app", "bob/app", "test/public"
CHALLENGE = 'Basic realm="distributed-images"'


def creds(user: tuple[str, str]) -> str:
    return f"{user[0]}:{user[1]}"


@dataclass(frozen=True)
class PrivateUpstream:
    registry: Registry
    tokens: TokenServer
    images: dict[str, OciImage]  # repository -> the image pushed there as tag 1

    def image(self, repository: str) -> OciImage:
        return self.images[repository]


@pytest.fixture(scope="module")
def private_upstream(workspace: Path) -> Iterator[PrivateUpstream]:
    workdir = workspace / "private-upstream"
    users = dict([ADMIN, ALICE, BOB, CAROL])
    grants = {"alice": {ALICE_REPO}, "bob": {BOB_REPO}, "carol": {ALICE_REPO}}
    tokens = TokenServer(TokenPolicy(users, {PUBLIC_REPO}, grants), workdir)
    tokens.start()
    registry = Registry(workdir, name="private-registry", token_auth=tokens.registry_auth())
    try:
        registry.start()
        built = {}
        for repository in (ALICE_REPO, BOB_REPO, PUBLIC_REPO):
            layers = [LayerSpec(6 * MiB), LayerSpec(200 * KiB, gzip=True)]
            image = images.build_image(workdir / repository, "1", layers, seed=repository)
            images.push(image, registry.host, f"{repository}:1", creds=creds(ADMIN))
            built[repository] = image
        yield PrivateUpstream(registry, tokens, built)
    finally:
        registry.stop()
        tokens.stop()


@pytest.fixture
def upstream(
    private_upstream: PrivateUpstream, request: pytest.FixtureRequest
) -> Iterator[PrivateUpstream]:
    mark = private_upstream.registry.mark()
    yield private_upstream
    if outcome.failed(request):
        for entry in private_upstream.registry.entries(since=mark):
            print(entry)


@pytest.fixture
def start_node(
    node_factory: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> Callable[..., Node]:
    """A node on the private upstream: `start_node("--access-ttl", "2", node_user=ALICE)`."""

    def start(*args: str, node_user: tuple[str, str] | None = None) -> Node:
        registry = upstream.registry
        auth = None
        if node_user is not None:
            auth = write_auth_file(workdir / "node-auth.json", {registry.host: node_user})
        return node_factory(
            {registry.host: registry.url}, registry.host, auth_file=auth, extra_args=args
        )

    return start


def pull(node: Node, repository: str, out: Path, user: tuple[str, str] | None = None) -> Path:
    return skopeo.pull(node.host, f"{repository}:1", out, creds=creds(user) if user else None)


def assert_pulled(out: Path, image: OciImage) -> None:
    assert skopeo.verify_dir(out) == image.image().blobs
    assert skopeo.manifest_digest(out) == image.digest


def refused(node: Node, repository: str, out: Path, user: tuple[str, str] | None = None) -> str:
    with pytest.raises(CommandFailed) as refusal:
        pull(node, repository, out, user)
    return str(refusal.value)


async def get(
    node: Node, path: str, user: tuple[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": images.OCI_MANIFEST}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(creds(user).encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}{path}", headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def test_each_user_pulls_what_it_may_cold_and_warm_and_is_refused_the_rest(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    node = start_node()
    for attempt in ("cold", "warm"):
        assert_pulled(
            pull(node, ALICE_REPO, workdir / f"a-{attempt}", ALICE), upstream.image(ALICE_REPO)
        )
        assert_pulled(pull(node, BOB_REPO, workdir / f"b-{attempt}", BOB), upstream.image(BOB_REPO))
        assert "unauthorized" in refused(node, ALICE_REPO, workdir / f"ba-{attempt}", BOB).lower()
        assert "unauthorized" in refused(node, BOB_REPO, workdir / f"ab-{attempt}", ALICE).lower()
        assert "unauthorized" in refused(node, ALICE_REPO, workdir / f"na-{attempt}").lower()
        assert_pulled(
            pull(node, PUBLIC_REPO, workdir / f"p-{attempt}"), upstream.image(PUBLIC_REPO)
        )
    served = node.metric("distributed_images_blob_bytes_total", source="cache")
    assert served >= sum(upstream.image(r).image().blob_bytes for r in (ALICE_REPO, BOB_REPO))


async def test_a_client_without_credentials_is_challenged_for_cached_private_content(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    node = start_node()
    image = upstream.image(ALICE_REPO).image()
    pull(node, ALICE_REPO, workdir / "alice", ALICE)  # the node now holds every byte of it
    status, headers, _ = await get(node, "/v2/")
    assert (status, headers.get("WWW-Authenticate")) == (200, CHALLENGE)
    for path in (
        f"/v2/{ALICE_REPO}/manifests/1",
        f"/v2/{ALICE_REPO}/manifests/{image.digest}",
        f"/v2/{ALICE_REPO}/blobs/{image.layers[0].digest}",
        f"/v2/{ALICE_REPO}/blobs/{image.config.digest}",
    ):
        status, headers, body = await get(node, path)
        assert status == 401, (path, status, body[:200])
        assert headers.get("WWW-Authenticate") == CHALLENGE, path
        assert b"UNAUTHORIZED" in body
    for path in (
        f"/v2/{ALICE_REPO}/manifests/1",
        f"/v2/{ALICE_REPO}/blobs/{image.layers[0].digest}",
    ):
        status, _, _ = await get(node, path, BOB)
        assert status == 401, path
        status, _, body = await get(node, path, ALICE)
        assert status == 200, path


async def test_a_digest_alone_opens_nothing(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    """Content by digest is served under a repository only if it belongs there: the node holds
    alice's image, but under bob's repository or the public one, its digests open nothing."""
    node = start_node()
    image = upstream.image(ALICE_REPO).image()
    pull(node, ALICE_REPO, workdir / "alice", ALICE)
    for blob in (image.config.digest, image.layers[0].digest):
        status, _, body = await get(node, f"/v2/{BOB_REPO}/blobs/{blob}", BOB)
        assert status == 404 and b"BLOB_UNKNOWN" in body, (status, body[:200])
        status, _, body = await get(node, f"/v2/{PUBLIC_REPO}/blobs/{blob}")
        assert status == 404 and b"BLOB_UNKNOWN" in body, (status, body[:200])
    status, _, body = await get(node, f"/v2/{BOB_REPO}/manifests/{image.digest}", BOB)
    assert status == 404 and b"MANIFEST_UNKNOWN" in body, (status, body[:200])
    status, _, body = await get(node, f"/v2/{PUBLIC_REPO}/manifests/{image.digest}")
    assert status == 404 and b"MANIFEST_UNKNOWN" in body, (status, body[:200])


async def test_a_private_repositorys_tags_are_listed_only_to_clients_that_may_read_it(
    start_node: Callable[..., Node],
) -> None:
    node = start_node()
    path = f"/v2/{ALICE_REPO}/tags/list"
    status, _, body = await get(node, path, ALICE)
    assert (status, json.loads(body)) == (200, {"name": ALICE_REPO, "tags": ["1"]})
    for user in (BOB, None):
        status, headers, body = await get(node, path, user)
        assert status == 401 and b"UNAUTHORIZED" in body, (user, status, body[:200])
        assert headers.get("WWW-Authenticate") == CHALLENGE
    status, _, body = await get(node, f"/v2/{PUBLIC_REPO}/tags/list")
    assert (status, json.loads(body)) == (200, {"name": PUBLIC_REPO, "tags": ["1"]})


def test_a_seeded_image_is_served_to_every_client_where_the_upstream_refuses_anonymous_reads(
    node_factory: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    """An images directory is the operator's: its images are served without credentials, even
    under a repository the upstream will not show anonymously (Docker Hub answers 401 for one
    it does not have, as for a private one)."""
    registry = upstream.registry
    seeded = images.build_image(
        workdir / "images" / "ghost",
        f"{registry.host}/ghost/app:1",
        [LayerSpec(300 * KiB)],
        seed="ghost",
    )
    node = node_factory(
        {registry.host: registry.url},
        registry.host,
        extra_args=["--images-dir", str(workdir / "images")],
    )
    assert_pulled(skopeo.pull(node.host, "ghost/app:1", workdir / "anonymous"), seeded)
    assert "unauthorized" in refused(node, ALICE_REPO, workdir / "alice-anonymous").lower()


async def test_while_the_upstream_is_down_public_stays_public_and_private_stays_closed(
    node_factory: Callable[..., Node], test_images: images.TestImages, workdir: Path
) -> None:
    """Cached content of a public repository is served through an outage, across a restart
    too; a private repository's only under a verdict within its TTL, then to nobody."""
    tokens = TokenServer(TokenPolicy(dict([ADMIN, ALICE]), {PUBLIC_REPO}, {}), workdir / "t")
    tokens.start()
    registry = Registry(workdir / "doomed", name="doomed", token_auth=tokens.registry_auth())
    try:
        registry.start()
        for repository in (ALICE_REPO, PUBLIC_REPO):
            images.push(test_images.app, registry.host, f"{repository}:1", creds=creds(ADMIN))
        # Long enough for the upstream to stop and one request to be answered on a busy machine
        # (each request that finds the upstream down tries it for a second or two).
        ttl = 8.0
        node = node_factory(
            {registry.host: registry.url}, registry.host, extra_args=["--access-ttl", str(ttl)]
        )
        image = test_images.app.image()
        checked_at = 0.0  # when Alice's verdict was taken, at the latest
        for attempt in ("online", "within-ttl", "after-ttl", "restarted"):
            if attempt == "within-ttl":
                registry.stop()
            if attempt == "after-ttl":
                time.sleep(max(0.0, checked_at + ttl + 0.5 - time.monotonic()))
            if attempt == "restarted":
                node.restart()
            # Alice's first, while her verdict is fresh.
            status, _, _ = await get(node, f"/v2/{ALICE_REPO}/manifests/1", ALICE)
            if attempt == "online":
                checked_at = time.monotonic()
            assert status == (200 if attempt in ("online", "within-ttl") else 503), attempt
            # A pull starts with the tag: served from the cache while the upstream is down.
            status, _, _ = await get(node, f"/v2/{PUBLIC_REPO}/manifests/1")
            assert status == 200, attempt
            status, _, _ = await get(node, f"/v2/{PUBLIC_REPO}/blobs/{image.layers[0].digest}")
            assert status == 200, attempt
            status, _, _ = await get(node, f"/v2/{ALICE_REPO}/blobs/{image.layers[0].digest}")
            assert status == 401, attempt
        assert (node.data_dir / "private-repositories.json").is_file()
    finally:
        registry.stop()
        tokens.stop()


def test_one_access_check_per_credential_and_repository(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    """Pulls within the TTL cost the upstream one check per credential and repository (a HEAD
    of the manifest with a fresh token), not one per blob or per pull."""
    node = start_node()
    registry = upstream.registry
    mark = registry.mark()
    tokens_before = len(upstream.tokens.requests_snapshot())
    for attempt in range(3):
        pull(node, ALICE_REPO, workdir / f"alice{attempt}", ALICE)
        pull(node, ALICE_REPO, workdir / f"carol{attempt}", CAROL)
    entries = [e for e in registry.entries(mark) if e.path.startswith(f"/v2/{ALICE_REPO}/")]
    checks = [e for e in entries if e.method == "HEAD" and e.is_manifest("1") and e.status == 200]
    assert len(checks) == 2, entries  # alice's and carol's
    assert not [e for e in entries if e.method == "HEAD" and e.is_blob()], entries
    fetched = {e.path for e in entries if e.method == "GET" and e.is_blob()}
    assert len(fetched) == len(upstream.image(ALICE_REPO).image().blobs), entries
    scope = f"repository:{ALICE_REPO}:pull"
    asked = [r for r in upstream.tokens.requests_snapshot()[tokens_before:] if scope in r.scopes]
    for user in ("alice", "carol"):
        assert 1 <= len([r for r in asked if r.account == user]) <= 2, asked  # check, fetch


def test_a_revoked_user_is_refused_after_the_ttl(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    ttl = 2.0
    node = start_node("--access-ttl", str(ttl))
    image = upstream.image(ALICE_REPO)
    by_digest = f"{ALICE_REPO}@{image.digest}"
    assert_pulled(pull(node, ALICE_REPO, workdir / "before", CAROL), image)
    upstream.tokens.revoke(CAROL[0])
    time.sleep(ttl + 0.5)
    assert "unauthorized" in refused(node, ALICE_REPO, workdir / "tag", CAROL).lower()
    with pytest.raises(CommandFailed, match=r"(?i)unauthorized"):
        skopeo.pull(node.host, by_digest, workdir / "digest", creds=creds(CAROL))
    assert_pulled(pull(node, ALICE_REPO, workdir / "alice", ALICE), image)


def test_node_credentials_serve_the_hosts_clients_unless_the_registry_is_requester_only(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    image = upstream.image(ALICE_REPO)
    shared = start_node(node_user=ALICE)
    assert_pulled(pull(shared, ALICE_REPO, workdir / "anonymous"), image)
    assert "unauthorized" in refused(shared, BOB_REPO, workdir / "bob-anonymous").lower()
    strict = start_node("--requester-only", upstream.registry.host, node_user=ALICE)
    assert "unauthorized" in refused(strict, ALICE_REPO, workdir / "strict-anonymous").lower()
    assert_pulled(pull(strict, ALICE_REPO, workdir / "strict-alice", ALICE), image)


async def test_another_node_of_the_cluster_checks_its_own_clients(
    upstream: PrivateUpstream, workdir: Path, request: pytest.FixtureRequest
) -> None:
    registry = upstream.registry
    cluster = Cluster(workdir / "cluster", {registry.host: registry.url}, registry.host, size=2)
    try:
        cluster.start()
        first, second = cluster.nodes
        image = upstream.image(ALICE_REPO)
        assert_pulled(pull(first, ALICE_REPO, workdir / "first", ALICE), image)
        for refused_user in (BOB, None):
            refused(second, ALICE_REPO, workdir / "second-refused", refused_user)
        mark = registry.mark()
        assert_pulled(pull(second, ALICE_REPO, workdir / "second", ALICE), image)
        assert not [e for e in registry.entries(mark) if e.method == "GET" and e.is_blob()]
        assert second.metric("distributed_images_blob_bytes_total", source="peer") > 0
        for user in (BOB, None):
            refused(second, ALICE_REPO, workdir / "second-refused-warm", user)
            refused(first, ALICE_REPO, workdir / "first-refused-warm", user)
        assert_pulled(pull(second, ALICE_REPO, workdir / "second-warm", ALICE), image)
    finally:
        cluster.stop()
        if outcome.failed(request):
            print(cluster.log_tails(120))


def client_requests(registry: Registry, since: int, agent: str) -> list[str]:
    """`METHOD path status` of what a client sent the upstream itself, past the node."""
    entries = registry.entries(since)
    return [f"{e.method} {e.path} {e.status}" for e in entries if agent in e.user_agent.lower()]


def test_ctr_answers_the_challenge_with_user_and_falls_through_without(
    start_node: Callable[..., Node],
    upstream: PrivateUpstream,
    containerd: Containerd,
    workdir: Path,
) -> None:
    node = start_node()
    registry = upstream.registry
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, registry.host, registry.url, node.url)
    image = upstream.image(ALICE_REPO)
    mark = registry.mark()
    containerd.pull(f"{registry.host}/{ALICE_REPO}:1", hosts, user=creds(ALICE))
    assert containerd.image_digest(f"{registry.host}/{ALICE_REPO}:1") == image.digest
    assert not client_requests(registry, mark, "containerd"), "ctr went past the node"
    denied = len(registry.denied())
    with pytest.raises(CommandFailed, match="401"):
        containerd.pull(f"{registry.host}/{ALICE_REPO}:1", hosts, namespace="anonymous")
    assert node.metric("distributed_images_requests_total", endpoint="manifest", code="401") > 0
    past = [e.path for e in registry.denied()[denied:] if "containerd" in e.user_agent]
    assert past and set(past) == {f"/v2/{ALICE_REPO}/manifests/1"}, past  # fell through, refused
    mark = registry.mark()
    containerd.pull(f"{registry.host}/{PUBLIC_REPO}:1", hosts, namespace="anonymous")
    assert not client_requests(registry, mark, "containerd"), "ctr went past the node"


def test_cri_pull_brings_the_pods_secret_to_the_node_and_falls_through_when_it_cannot(
    start_node: Callable[..., Node],
    upstream: PrivateUpstream,
    workdir: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The kubelet's PullImage carries the pod's secret for the image's registry with no server
    address: containerd 1.6 answers the node's challenge with it. With a server address that
    names the upstream, containerd keeps it from the node, which challenges; containerd then
    pulls from the upstream with the secret itself."""
    node = start_node()
    registry = upstream.registry
    hosts = workdir / "certs.d"
    write_hosts_toml(hosts, registry.host, registry.url, node.url)
    daemon = Containerd(workdir / "cri-containerd", cri_hosts_dir=hosts)
    try:
        daemon.start()
        mark = registry.mark()
        pulled = cri.pull(daemon.socket, f"{registry.host}/{ALICE_REPO}:1", cri.AuthConfig(*ALICE))
        assert pulled == upstream.image(ALICE_REPO).image().config.digest
        assert not client_requests(registry, mark, "containerd"), "containerd went past the node"
        mark = registry.mark()
        pinned = cri.AuthConfig(*BOB, server_address=f"http://{registry.host}")
        pulled = cri.pull(daemon.socket, f"{registry.host}/{BOB_REPO}:1", pinned)
        assert pulled == upstream.image(BOB_REPO).image().config.digest
        past = client_requests(registry, mark, "containerd")
        assert any(r.startswith("GET ") and "/blobs/" in r and r.endswith(" 200") for r in past)
        with pytest.raises(grpc.RpcError, match="401"):
            cri.pull(daemon.socket, f"{registry.host}/{ALICE_REPO}:1", cri.AuthConfig(*BOB))
    finally:
        if outcome.failed(request):
            print(daemon.log_tail())
        daemon.stop()


def test_podman_sends_credentials_it_holds_for_the_node(
    start_node: Callable[..., Node], upstream: PrivateUpstream, podman: Podman, workdir: Path
) -> None:
    node = start_node()
    registry = upstream.registry
    podman.allow_plain_http(node.host)
    mark = registry.mark()
    podman.pull(f"{ALICE_REPO}:1", registry=node.host, creds=creds(ALICE))
    with pytest.raises(CommandFailed, match=r"(?i)unauthorized"):
        podman.pull(f"{ALICE_REPO}:1", registry=node.host, creds=creds(BOB))
    podman.configure(location=registry.host, mirror=node.host)  # the node as a mirror
    podman.log_in(node.host, *ALICE)
    podman.pull(f"{ALICE_REPO}:1")
    assert podman.inspect(f"{ALICE_REPO}:1")["Digest"] == upstream.image(ALICE_REPO).digest
    assert not client_requests(registry, mark, "containers/"), "podman went past the node"


def test_nothing_of_a_credential_reaches_logs_metrics_or_the_data_dir(
    start_node: Callable[..., Node], upstream: PrivateUpstream, workdir: Path
) -> None:
    node = start_node()
    pull(node, ALICE_REPO, workdir / "alice", ALICE)
    refused(node, ALICE_REPO, workdir / "bob", BOB)
    secrets = _secret_forms([ALICE, BOB])
    exposed = _files_mentioning(node.workdir, secrets)  # the data dir and the node's logs
    metrics = http_get(f"{node.url}/metrics")
    assert not [s for s in secrets if s in metrics], "a credential in the metrics"
    assert not exposed, exposed


def _secret_forms(users: Sequence[tuple[str, str]]) -> list[bytes]:
    forms = []
    for user, password in users:
        pair = f"{user}:{password}".encode()
        forms += [password.encode(), pair, base64.b64encode(pair)]
    return forms


def _files_mentioning(root: Path, secrets: list[bytes]) -> list[str]:
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            data = path.read_bytes()
            found += [f"{path}: {s[:3]!r}..." for s in secrets if s in data]
    return found


class RedirectingUpstream:
    """A registry behind Basic auth (only `alice` may read `priv/app`) that sends blob GETs to
    storage on another origin, as registries send them to a CDN or a bucket; the storage
    records the Authorization header of every request it gets."""

    def __init__(self) -> None:
        self.config = (
            b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        )
        self.layer = os.urandom(300 * KiB)
        blobs = [(images.OCI_CONFIG, self.config), (images.LAYER_GZIP, self.layer)]
        self.blobs = {_sha256(data): data for _, data in blobs}
        descriptors = [
            {"mediaType": kind, "digest": _sha256(data), "size": len(data)} for kind, data in blobs
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": images.OCI_MANIFEST,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
        self.manifest = json.dumps(manifest).encode()
        self.storage_authorizations: list[str | None] = []
        self.registry = BackgroundServer(self._registry)
        self.storage = BackgroundServer(self._storage)

    def _registry(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/priv/app/manifests/{ref}", self._manifest, allow_head=True)
        app.router.add_get("/v2/priv/app/blobs/{digest}", self._blob, allow_head=True)
        return app

    def _storage(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/bucket/{digest}", self._stored)
        return app

    def _allowed(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(creds(ALICE).encode()).decode()
        return request.headers.get("Authorization") == expected

    async def _manifest(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="fake"'})
        headers = {"Docker-Content-Digest": _sha256(self.manifest)}
        return web.Response(body=self.manifest, content_type=images.OCI_MANIFEST, headers=headers)

    async def _blob(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="fake"'})
        digest = request.match_info["digest"]
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(self.blobs[digest]))})
        raise web.HTTPTemporaryRedirect(f"{self.storage.url}/bucket/{digest}?signature=s")

    async def _stored(self, request: web.Request) -> web.Response:
        self.storage_authorizations.append(request.headers.get("Authorization"))
        return web.Response(body=self.blobs[request.match_info["digest"]])


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def redirecting_upstream() -> Iterator[RedirectingUpstream]:
    upstream = RedirectingUpstream()
    upstream.registry.start()
    upstream.storage.start()
    yield upstream
    upstream.storage.stop()
    upstream.registry.stop()


async def test_a_redirect_to_blob_storage_never_carries_the_clients_credentials(
    node_factory: Callable[..., Node], redirecting_upstream: RedirectingUpstream
) -> None:
    fake = redirecting_upstream
    host = fake.registry.url.removeprefix("http://")
    node = node_factory({host: fake.registry.url}, host)
    status, _, body = await get(node, "/v2/priv/app/manifests/1")
    assert status == 401, body
    status, _, body = await get(node, "/v2/priv/app/manifests/1", ALICE)
    assert (status, body) == (200, fake.manifest)
    for digest, data in fake.blobs.items():
        status, _, body = await get(node, f"/v2/priv/app/blobs/{digest}", ALICE)
        assert (status, body) == (200, data)
    assert len(fake.storage_authorizations) == len(fake.blobs)
    assert fake.storage_authorizations == [None] * len(fake.blobs)
