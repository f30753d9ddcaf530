"""`GET /v2/<name>/tags/list` and `GET /v2/_catalog` in-process, against a small upstream that
pages its tag lists (two a page, with `Link`), goes down, or refuses, on demand; and an images
directory holding an OCI layout whose tags the node seeds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.app import compose
from node.config import Config
from node.oci import sending
from tests.support import rawhttp
from tests.support.images import LayerSpec, build_image

PAGE = 2


@dataclass
class PagingUpstream:
    """Tag lists by repository, two a page; `answer` overrides every tags request's status."""

    tags: dict[str, list[str]] = field(default_factory=dict)
    answer: int | None = None
    next_link: str | None = None  # a Link to send instead of the right one
    page: int = PAGE
    requests: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if request.path == "/v2/":
            return web.json_response({})
        name = request.path.removeprefix("/v2/").removesuffix("/tags/list")
        if self.answer is not None:
            return web.json_response({"errors": [{"code": "X"}]}, status=self.answer)
        if not request.path.endswith("/tags/list") or name not in self.tags:
            return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
        n = min(int(request.query.get("n", self.page)), self.page)
        last = request.query.get("last", "")
        rest = [t for t in sorted(self.tags[name]) if t > last]
        response = web.json_response({"name": name, "tags": rest[:n]})
        if len(rest) > n:
            link = self.next_link or f"/v2/{name}/tags/list?n={n}&last={rest[n - 1]}"
            response.headers["Link"] = f'<{link}>; rel="next"'
        return response


@dataclass
class Harness:
    upstream: PagingUpstream
    http: aiohttp.ClientSession
    base: str
    ns: str

    async def get(self, path: str, **query: str) -> aiohttp.ClientResponse:
        response = await self.http.get(f"{self.base}{path}", params={"ns": self.ns, **query})
        await response.read()
        return response

    async def tags(self, name: str, **query: str) -> list[str]:
        response = await self.get(f"/v2/{name}/tags/list", **query)
        assert response.status == 200, await response.text()
        body = json.loads(await response.read())
        assert body["name"] == name
        tags: list[str] = body["tags"]
        return tags


SEEDED = {"test/app": ["seeded"], "only/seeded": ["1", "2"]}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    upstream = PagingUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    upstream_server = TestServer(app, host="127.0.0.1")
    await upstream_server.start_server()
    ns = f"127.0.0.1:{upstream_server.port}"
    images = tmp_path / "images"
    for repository, tags in SEEDED.items():
        for tag in tags:
            slug = f"{repository}-{tag}".replace("/", "-")
            build_image(images / slug, f"{ns}/{repository}:{tag}", [LayerSpec(1000)], seed=slug)
    config = Config()
    config.store.data_dir = tmp_path / "data"
    config.images_dir = images
    config.cluster.peer_listen = "127.0.0.1:0"
    config.upstream.auth_file = str(tmp_path / "no-auth.json")
    config.upstream.registry = [f"{ns}=http://{ns}"]
    config.upstream.upstream_retries = 0
    config.upstream.upstream_timeout = 5
    async with compose(config) as node:
        assert node.seeds is not None
        for _ in range(2):  # the first scan sees the layouts, the second imports them
            await node.seeds.sync()
        assert len(node.seeds.refs()) == 3, node.seeds.failures()
        node.ready = True
        node_server = TestServer(node.app, host="127.0.0.1")
        await node_server.start_server()
        async with aiohttp.ClientSession() as http:
            yield Harness(upstream, http, f"http://127.0.0.1:{node_server.port}", ns)
        await node_server.close()
    await upstream_server.close()


async def error_codes(response: aiohttp.ClientResponse) -> list[str]:
    return [e["code"] for e in json.loads(await response.read())["errors"]]


async def test_the_upstreams_pages_are_followed_and_merged_with_the_seeded_tags(
    harness: Harness,
) -> None:
    harness.upstream.tags["test/app"] = ["e", "a", "d", "b", "c"]
    assert await harness.tags("test/app") == ["a", "b", "c", "d", "e", "seeded"]
    pages = [r for r in harness.upstream.requests if r.startswith("/v2/test/app/tags/list")]
    assert len(pages) == 3, pages


async def test_n_and_last_page_through_the_merged_list_with_a_link_to_the_next_page(
    harness: Harness,
) -> None:
    harness.upstream.tags["test/app"] = ["a", "b", "c", "d"]
    seen: list[str] = []
    response = await harness.get("/v2/test/app/tags/list", n="2")
    while True:
        assert response.status == 200
        seen += json.loads(await response.read())["tags"]
        link = response.headers.get("Link")
        if link is None:
            break
        assert link.endswith('>; rel="next"') and f"ns={harness.ns}" in link
        response = await harness.http.get(harness.base + link[1 : link.index(">")])
    assert seen == ["a", "b", "c", "d", "seeded"]
    assert await harness.tags("test/app", last="c") == ["d", "seeded"]
    assert await harness.tags("test/app", n="0") == []


@pytest.mark.parametrize("answer", [404, 401, 403, 503])
async def test_the_seeded_tags_stand_alone_when_the_upstream_cannot_list_the_repository(
    harness: Harness, answer: int
) -> None:
    harness.upstream.answer = answer
    assert await harness.tags("only/seeded") == ["1", "2"]
    assert await harness.tags("test/app") == ["seeded"]


@pytest.mark.parametrize(("answer", "status", "code"), [(404, 404, "NAME_UNKNOWN"),
                                                        (401, 401, "UNAUTHORIZED"),
                                                        (503, 503, "UNAVAILABLE")])  # fmt: skip
async def test_a_repository_nobody_seeds_gets_the_upstreams_error(
    harness: Harness, answer: int, status: int, code: str
) -> None:
    harness.upstream.tags["other/app"] = ["1"]
    harness.upstream.answer = answer if answer != 404 else None
    name = "other/app" if answer != 404 else "missing/app"
    response = await harness.get(f"/v2/{name}/tags/list")
    assert response.status == status
    assert await error_codes(response) == [code]


async def test_a_link_to_another_host_is_not_followed(harness: Harness) -> None:
    harness.upstream.tags["test/app"] = ["a", "b", "c"]
    harness.upstream.next_link = "http://127.0.0.2:9/v2/test/app/tags/list?n=2&last=b"
    assert await harness.tags("test/app") == ["a", "b", "seeded"]
    assert len([r for r in harness.upstream.requests if "tags/list" in r]) == 1


@pytest.mark.parametrize("n", ["-1", "x", "1e3", "9999999999"])
async def test_a_bad_page_size_is_the_specs_error(harness: Harness, n: str) -> None:
    response = await harness.get("/v2/test/app/tags/list", n=n)
    assert response.status == 400
    assert await error_codes(response) == ["PAGINATION_NUMBER_INVALID"]


async def test_the_catalog_lists_the_seeded_repositories_in_pages(harness: Harness) -> None:
    response = await harness.get("/v2/_catalog")
    assert response.status == 200
    assert json.loads(await response.read()) == {"repositories": ["only/seeded", "test/app"]}
    first = await harness.get("/v2/_catalog", n="1")
    assert json.loads(await first.read()) == {"repositories": ["only/seeded"]}
    assert "last=only/seeded" in first.headers["Link"]
    second = await harness.get("/v2/_catalog", n="1", last="only/seeded")
    assert json.loads(await second.read()) == {"repositories": ["test/app"]}
    assert "Link" not in second.headers
    assert not [r for r in harness.upstream.requests if "_catalog" in r]


async def test_the_catalog_of_a_namespace_nothing_is_seeded_from_is_empty(
    harness: Harness,
) -> None:
    response = await harness.http.get(f"{harness.base}/v2/_catalog", params={"ns": "ghcr.io"})
    assert response.status == 200
    assert json.loads(await response.read()) == {"repositories": []}


async def test_the_catalog_of_a_namespace_the_node_does_not_mirror_is_name_unknown(
    harness: Harness,
) -> None:
    response = await harness.http.get(f"{harness.base}/v2/_catalog", params={"ns": "example.com"})
    assert response.status == 404
    assert await error_codes(response) == ["NAME_UNKNOWN"]


async def test_head_answers_the_tags_list_without_a_body(harness: Harness) -> None:
    response = await harness.http.head(f"{harness.base}/v2/only/seeded/tags/list?ns={harness.ns}")
    assert response.status == 200
    assert await response.read() == b""


async def test_head_and_get_of_a_tags_list_share_a_connection(harness: Harness) -> None:
    """The head of a HEAD, then the whole of a GET, each framed by its Content-Length."""
    host, port = harness.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    path = f"/v2/only/seeded/tags/list?ns={harness.ns}"
    writer.write(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    answers = (await asyncio.wait_for(reader.read(), 10)).split(b"HTTP/1.1 ")
    writer.close()
    assert [a.split(b"\r\n", 1)[0] for a in answers[1:]] == [b"200 OK", b"200 OK"]
    head, get = (a.partition(b"\r\n\r\n") for a in answers[1:])
    assert head[2] == b""
    assert json.loads(get[2]) == {"name": "only/seeded", "tags": ["1", "2"]}


async def test_a_client_that_stops_reading_a_tags_list_is_cut_off(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A list of 10,000 long tags is over a MiB: a client that asked for it a few times over
    one connection and read nothing held the connection and that much of the node's memory
    for ever. It is sent a slice at a time now, and cut off as a blob's reader is."""
    monkeypatch.setattr(sending, "SEND_STALL_SECONDS", 1.0)
    harness.upstream.page = 1000
    harness.upstream.tags["test/many"] = [f"{i:05d}-" + "t" * 120 for i in range(10_000)]
    listed = await harness.get("/v2/test/many/tags/list")
    assert listed.status == 200
    size = len(await listed.read())
    assert size > 1 << 20

    asked = 12  # more than the socket buffers between the two hold
    target = f"/v2/test/many/tags/list?ns={harness.ns}"
    host = harness.base.removeprefix("http://")
    received = await rawhttp.stalled_read(host, target, asked, asked * size)
    assert 0 < received < asked * size
    assert "listing transfer aborted" in caplog.messages
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
