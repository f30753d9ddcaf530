"""A node's status, as a person sees it: the page at `GET /` rendered by headless Chromium (the
key elements checked in the rendered DOM, a screenshot taken and looked at for the chart's
colours), the JSON it is drawn from (`GET /status`), and `status --node` and `doctor` on the
console, after three pulls whose bytes came from the upstream, the cache and a seeded archive,
with one archive the node cannot read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from node.statuspage import COLORS
from tests.support import images, skopeo
from tests.support.chromium import Chromium
from tests.support.images import LayerSpec, OciImage
from tests.support.node import CHECKOUT, Node
from tests.support.permissions import NO_DAC, OTHER_UID, foreign
from tests.support.process import http_get
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

# What the page must show, read from the rendered DOM in one go.
FACTS = """(() => {
  const text = (selector) => document.querySelector(selector)?.innerText ?? null;
  const rows = (selector) => [...document.querySelectorAll(selector)].map((r) => r.innerText);
  const bars = [...document.querySelectorAll('#traffic-chart rect.bar')].map((bar) => {
    const box = bar.getBBox();
    return {source: bar.dataset.source, bytes: Number(bar.dataset.bytes),
            width: box.width, height: box.height};
  });
  return {
    title: document.title,
    ready: document.querySelector('#readiness').dataset.ready,
    readiness: text('#readiness'),
    problems: rows('#readiness .problems li'),
    tracker: text('#tracker'),
    peers: text('#peers'),
    bars: bars,
    legend: rows('#traffic .legend .source'),
    pulls: rows('#pulls tr.pull'),
    seeded: rows('#seeded tr'),
    skipped: rows('#skipped tr.skipped'),
    store: text('#store'),
    scripts: document.scripts.length,
    fetched: performance.getEntriesByType('resource').map((r) => r.name),
  };
})()"""


@dataclass
class Pulled:
    node: Node
    app: OciImage
    seeded_bytes: int
    saved: Path


def blob_bytes(directory: Path) -> int:
    return sum(skopeo.verify_dir(directory).values())


@pytest.fixture
def pulled(
    workdir: Path,
    registry_factory: Callable[..., Registry],
    node_factory: Callable[..., Node],
) -> Pulled:
    """A node that served test/app:1 twice (upstream, then cache) and seeded/app:1 (seed)."""
    upstream = registry_factory()
    layers = [LayerSpec(600_000), LayerSpec(200_000, gzip=True)]
    app = images.build_image(workdir / "app", "1", layers, seed="status-app")
    images.push(app, upstream.host, "test/app:1")
    local = images.build_image(workdir / "local", "1", [LayerSpec(300_000)], seed="status-seed")
    images_dir = workdir / "images"
    images_dir.mkdir()
    skopeo.save_archive(local, images_dir / "seeded.tar", f"{upstream.host}/seeded/app:1")
    saved = images_dir / "saved.tar"
    saved.write_bytes((images_dir / "seeded.tar").read_bytes())
    foreign(saved, 0o600)  # as `docker save -o` leaves it, for another user
    args = ["--images-dir", str(images_dir), "--prefetch", "0"]
    node = node_factory(
        {upstream.host: upstream.url}, upstream.host, extra_args=args, wrapper=NO_DAC
    )
    skopeo.pull(node.host, "test/app:1", workdir / "pull1")
    skopeo.pull(node.host, "test/app:1", workdir / "pull2")
    seeded_bytes = blob_bytes(skopeo.pull(node.host, "seeded/app:1", workdir / "pull3"))
    return Pulled(node, app, seeded_bytes, saved)


def test_the_status_document_says_where_each_pulls_bytes_came_from(pulled: Pulled) -> None:
    document = json.loads(http_get(f"{pulled.node.url}/status"))
    assert document["ready"] is True and document["why"] == "serving"
    [problem] = document["problems"]
    assert problem.startswith("archive skipped: saved.tar: cannot read") and "chmod a+r" in problem
    size = pulled.app.image().blob_bytes
    pulls = [(p["image"], p["blobs"], p["bytes"], p["state"]) for p in document["pulls"]]
    nothing = {"cache": 0, "peer": 0, "upstream": 0, "seed": 0}
    assert [p[2] for p in pulls] == [
        {**nothing, "seed": pulled.seeded_bytes},
        {**nothing, "cache": size},
        {**nothing, "upstream": size},
    ]
    assert [p[0].split("/", 1)[1] for p in pulls] == ["seeded/app:1", "test/app:1", "test/app:1"]
    assert [p[1] for p in pulls] == [1 + 1, 2 + 1, 2 + 1]  # layers and the config
    traffic = document["traffic"]
    summed = {s: sum(b[s] for b in traffic["buckets"]) for s in traffic["sources"]}
    assert summed == {**nothing, "upstream": size, "cache": size, "seed": pulled.seeded_bytes}
    assert traffic["totals"] == summed
    archives = document["archives"]
    assert [a["name"] for a in archives["seeded"]] == ["seeded.tar"]
    assert archives["seeded"][0]["tags"][0].endswith("/seeded/app:1")
    [skipped] = archives["skipped"]
    assert skipped["name"] == "saved.tar" and "permission denied" in skipped["reason"]
    assert f"`chmod a+r {pulled.saved}`" in skipped["fix"]
    tracker = document["tracker"]
    assert tracker["embedded"] is True and tracker["joined"] is True
    assert document["store"]["bytes"] >= size + pulled.seeded_bytes  # fetched, and seeded


async def test_the_status_page_renders_in_chromium_with_its_key_elements(
    pulled: Pulled, workdir: Path, tmp_path: Path
) -> None:
    async with Chromium(workdir) as browser:
        page = await browser.open(f"{pulled.node.url}/")
        facts: dict[str, Any] = await page.evaluate(FACTS)
        screenshot = await page.screenshot(tmp_path / "status-page.png")
    print(f"screenshot: {screenshot}")
    assert facts["title"] == f"distributed-images node {pulled.node.host}"
    assert facts["ready"] == "true" and "Ready: serving clients" in facts["readiness"]
    [problem] = facts["problems"]
    assert "saved.tar" in problem and f"chmod a+r {pulled.saved}" in problem
    assert "embedded tracker" in facts["tracker"] and "joined" in facts["tracker"]
    assert "open peer connection" in facts["peers"]
    by_source: dict[str, int] = {}
    for bar in facts["bars"]:
        assert bar["width"] > 0 and bar["height"] > 0, bar
        by_source[bar["source"]] = by_source.get(bar["source"], 0) + bar["bytes"]
    size = pulled.app.image().blob_bytes
    assert by_source == {"upstream": size, "cache": size, "seed": pulled.seeded_bytes}
    assert [line.split(":")[0] for line in facts["legend"]] == ["cache", "peer", "upstream", "seed"]
    assert len(facts["pulls"]) == 3
    assert "seeded/app:1" in facts["pulls"][0] and "seed " in facts["pulls"][0]
    assert "test/app:1" in facts["pulls"][2] and "upstream " in facts["pulls"][2]
    assert any("seeded.tar" in row for row in facts["seeded"])
    [skipped] = facts["skipped"]
    assert "saved.tar" in skipped and "permission denied" in skipped and "chmod a+r" in skipped
    assert "no quota" in facts["store"] and f"uid {os.getuid()}" in facts["store"]
    assert facts["scripts"] == 0, "the page runs no JavaScript of its own"
    assert facts["fetched"] == [], "the page fetched something besides itself"
    shot = Image.open(screenshot).convert("RGB")
    assert shot.width == 1100 and shot.height > 800
    colours = {colour for _, colour in shot.getcolors(maxcolors=1 << 24) or []}
    for source in ("upstream", "cache", "seed"):
        rgb = tuple(int(COLORS[source][i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, f"no {source} bar in the screenshot"


def status_command(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    env["PYTHONPATH"] = str(CHECKOUT)
    argv = [sys.executable, "-m", "distributed_images.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_status_and_doctor_show_the_skipped_archive_with_the_fix(
    pulled: Pulled, workdir: Path
) -> None:
    url = pulled.node.url
    table = status_command("status", "--node", url)
    assert table.returncode == 0, table.stderr
    assert f"node {url}: ready" in table.stdout
    assert "SKIPPED  saved.tar: cannot read" in table.stdout
    assert f"fix: make it readable by uid 0: `chmod a+r {pulled.saved}`" in table.stdout
    assert f"owner uid {OTHER_UID}, mode 0600" in table.stdout
    assert json.loads(status_command("status", "--node", url, "--json").stdout)["ready"] is True
    config = workdir / "containerd.toml"
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n')
    doctor = status_command("doctor", "--node", url, "--containerd-config", str(config))
    assert doctor.returncode == 1
    assert f"node {url}: archive saved.tar: skipped, its images are not served" in doctor.stdout
    assert f"fix: make it readable by uid 0: `chmod a+r {pulled.saved}`" in doctor.stdout


def test_status_names_a_node_that_does_not_answer() -> None:
    result = status_command("status", "--node", "http://127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.startswith("status: node http://127.0.0.1:9: not answering")
    assert "Traceback" not in result.stderr
