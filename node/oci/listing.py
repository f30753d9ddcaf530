"""`GET /v2/<name>/tags/list` and `GET /v2/_catalog`, as a mirror answers them.

A repository's tags are the upstream's list merged with the tags this node seeds from its
images directory; the seeded tags alone when the upstream cannot be reached, has no such
repository, or will not list it (Docker Hub answers 401 for a repository it does not have), so
`skopeo inspect` and `skopeo list-tags` work for a seeded image in an air-gapped cluster. The
catalog is the repositories the node seeds: the upstream's catalog is not the node's to list.
The upstream's list is asked with the client's credentials if it sent some (node.access), so
the upstream decides, each time, whom it lists a private repository's tags to.

Both lists are sorted and paginated the way the distribution spec says: at most `n` entries,
those after `last`, and a `Link: <...>; rel="next"` header when more follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from aiohttp import web

from node.access import Access
from node.errors import (
    NotFound,
    PaginationInvalid,
    UpstreamDenied,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from node.oci import sending
from node.oci.reference import validate_name
from node.upstream.client import MAX_TAGS, UpstreamClient
from node.upstream.registries import Registries, Upstream

# What the upstream cannot answer, or answers for a repository it does not show: then the
# seeded tags stand alone, if there are any.
UPSTREAM_SILENT = (UpstreamUnavailable, NotFound, UpstreamUnauthorized, UpstreamDenied)

SeededTags = Callable[[str, str], Sequence[str]]  # (ns, repository) -> tags
SeededRepositories = Callable[[str], Sequence[str]]  # ns -> repositories


class Listing:
    def __init__(
        self,
        registries: Registries,
        upstream: UpstreamClient,
        seeded_tags: SeededTags,
        seeded_repositories: SeededRepositories,
        access: Access | None = None,
    ) -> None:
        self._registries = registries
        self._upstream = upstream
        self._seeded_tags = seeded_tags
        self._seeded_repositories = seeded_repositories
        self._access = access

    async def tags(self, request: web.Request) -> web.StreamResponse:
        name = validate_name(request.match_info["name"])
        n, last = page_query(request)
        upstream = self._registries.resolve(request.query.get("ns"))
        if self._access is not None:
            upstream = self._access.live(upstream, request.headers.get("Authorization"))
        tags = await self.all_tags(upstream, name)
        page, more = paginate(tags, n, last)
        return await _answer(request, {"name": name, "tags": page}, page, n, more)

    async def all_tags(self, upstream: Upstream, name: str) -> list[str]:
        seeded = self._seeded_tags(upstream.ns, upstream.repository(name))
        try:
            listed = await self._upstream.tags(upstream, name)
        except UPSTREAM_SILENT:
            if not seeded:
                raise
            listed = []
        return sorted(set(listed).union(seeded))[:MAX_TAGS]

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        n, last = page_query(request)
        upstream = self._registries.resolve(request.query.get("ns"))
        repositories = sorted(self._seeded_repositories(upstream.ns))
        page, more = paginate(repositories, n, last)
        return await _answer(request, {"repositories": page}, page, n, more)


def page_query(request: web.Request) -> tuple[int | None, str | None]:
    """`n` (a count, at most MAX_TAGS) and `last` from the query."""
    text = request.query.get("n")
    n = None
    if text is not None:
        if not (text.isascii() and text.isdigit()) or len(text) > 9:  # "²" is a digit too
            raise PaginationInvalid("n must be a number of entries", {"n": text[:20]})
        n = min(int(text), MAX_TAGS)
    return n, request.query.get("last") or None


def paginate(entries: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """The entries after `last`, at most `n` of them; whether more follow."""
    after = [e for e in entries if e > last] if last is not None else entries
    if n is None:
        return after, False
    return after[:n], len(after) > n


async def _answer(
    request: web.Request, body: dict[str, object], page: list[str], n: int | None, more: bool
) -> web.StreamResponse:
    """The page as JSON, sent a slice at a time: a list of 10,000 long tags is over a MiB, and a
    client that stops reading it is cut off as from a blob."""
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    if more and n and page:
        query = {"n": str(n), "last": page[-1]}
        if "ns" in request.query:
            query["ns"] = request.query["ns"]
        response.headers["Link"] = f'<{request.path}?{urlencode(query, safe=":/")}>; rel="next"'
    return await sending.send_bytes(request, response, json.dumps(body).encode(), "listing")
