"""The status page drawn from an overview document: what a client, a peer or a file name put in
it is shown as text, never as markup, and every part of the document has its place."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from node.activity import SOURCES
from node.statuspage import render

HOSTILE = '<script>alert("x")</script><img src=http://example.com/x>'


def document() -> dict[str, Any]:
    nothing = dict.fromkeys(SOURCES, 0)
    return {
        "ready": False,
        "why": f"importing {HOSTILE}",
        "problems": [f"archive skipped: {HOSTILE}: cannot read; fix: chmod a+r x"],
        "uptime_seconds": 3725.0,
        "tracker": {"address": "10.0.0.1:7070", "embedded": False, "joined": False, "joins": 2},
        "peers": {
            "connections": 2,
            "downloaded_bytes": 3 << 20,
            "uploaded_bytes": 1 << 20,
            "connected": [
                {"address": "10.0.0.2:6881", "downloaded": 2 << 20, "uploaded": 0, "torrents": 3},
                {"address": "10.0.0.3:6881", "downloaded": 0, "uploaded": 1 << 20, "torrents": 1},
            ],
            "more_connected": 5,
        },
        "traffic": {
            "bucket_seconds": 10,
            "sources": list(SOURCES),
            "buckets": [nothing] * 59 + [{**nothing, "peer": 3 << 20, "upstream": 1 << 20}],
            "totals": {**nothing, "peer": 3 << 20, "upstream": 1 << 20},
        },
        "pulls": [
            {
                "image": f"docker.io/{HOSTILE}:1",
                "client": "10.0.0.9",
                "started": 0.0,
                "seconds": 1.25,
                "blobs": 3,
                "failed_blobs": 1,
                "bytes": {**nothing, "peer": 3 << 20},
                "state": "done",
                "idle_seconds": 9.0,
            },
        ],
        "archives": {
            "images_dir": "/app/images",
            "seeded": [
                {
                    "name": "a.tar",
                    "format": "oci-archive",
                    "images": 1,
                    "tags": ["docker.io/library/a:1"],
                    "more_tags": 0,
                }
            ],
            "skipped": [{"name": HOSTILE, "reason": "cannot read", "fix": "chmod a+r x"}],
        },
        "store": {
            "data_dir": "/var/lib/distributed-images",
            "bytes": 5 << 30,
            "quota_bytes": 10 << 30,
            "low_watermark": 0.9,
            "disk_free_bytes": None,
            "uid": 10001,
        },
    }


class Elements(HTMLParser):
    """Every start tag, with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


def test_what_clients_and_files_named_is_text_not_markup() -> None:
    page = render(document(), '"><script>host</script>')
    elements = parse(page)
    assert not [t for t, _ in elements.tags if t in ("script", "img", "iframe", "link")]
    text = "".join(elements.text)
    assert HOSTILE in text and '"><script>host</script>' in text


def test_every_part_of_the_document_has_its_place() -> None:
    elements = parse(render(document(), "node:8080"))
    ids = {attrs.get("id") for _, attrs in elements.tags}
    assert {
        "readiness",
        "tracker",
        "peers",
        "traffic",
        "traffic-chart",
        "pulls",
        "archives",
        "skipped",
        "seeded",
        "store",
        "connected-peers",
        "store-meter",
    } <= ids
    readiness = next(attrs for tag, attrs in elements.tags if attrs.get("id") == "readiness")
    assert readiness["data-ready"] == "false" and readiness["class"] == "not-ready"
    bars = [attrs for tag, attrs in elements.tags if tag == "rect"]
    assert {(b["data-source"], b["data-bytes"]) for b in bars} == {
        ("peer", str(3 << 20)),
        ("upstream", str(1 << 20)),
    }
    text = "".join(elements.text)
    assert "Not ready: importing" in text
    assert "tracker at 10.0.0.1:7070: not joined: retrying" in text
    assert "10.0.0.2:6881" in text and "and 5 more" in text
    assert "5.0 GiB of a 10.0 GiB quota (50%)" in text
    assert "1 broken off" in text and "up 1 h 2 min" in text
