"""A client of a node is untrusted input (DESIGN section 10): whatever it sends, the node answers
at once with the right error, keeps serving everybody else, and its memory, metrics and upstream
traffic do not grow with what the client chose."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import rawhttp
from tests.support.images import TestImages
from tests.support.node import Node
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

APP = TestImages.APP
# Far more than a client needs to be answered; a backtracking parser needed hours for these.
PROMPT = 10.0


@pytest.fixture
def node(shared_node: Node) -> Node:
    return shared_node


@pytest.mark.parametrize(
    "ns",
    [
        "a" * 40 + "!",  # a host name's labels: 2^40 ways to split them
        "a-" * 2000 + "!",
        "a." * 2000 + "-",
        "[" + ":" * 4000,
    ],
)
async def test_a_pathological_ns_is_refused_at_once_and_the_node_keeps_serving(
    node: Node, upstream: Registry, ns: str
) -> None:
    mark = upstream.mark()
    refused = asyncio.create_task(
        rawhttp.request(node.host, "GET", f"/v2/{APP}/manifests/1?ns={ns}", timeout=PROMPT)
    )
    health = await rawhttp.request(node.host, "GET", "/healthz", timeout=PROMPT)
    assert health.status == 200
    response = await refused
    assert response.status == 400, response
    assert response.json() == {
        "errors": [
            {
                "code": "NAME_INVALID",
                "message": "invalid registry namespace",
                "detail": {"ns": ns[:255]},
            }
        ]
    }
    assert upstream.entries(mark) == []
