"""skopeo lists tags and inspects images through a node: the upstream's tags merged with the
seeded ones, and a seeded image's tags with no upstream to ask (skopeo inspect lists the
repository's tags first, so without a tags list it cannot inspect anything)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import images, skopeo
from tests.support.images import LayerSpec
from tests.support.node import Node
from tests.support.process import http_get, run
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def skopeo_json(*args: str) -> dict[str, object]:
    argv = ["skopeo", *args[:1], "--tls-verify=false", "--no-creds", "--retry-times=0", *args[1:]]
    result: dict[str, object] = json.loads(run(argv, timeout=60).stdout)
    return result


def test_skopeo_lists_and_inspects_upstream_and_seeded_tags_through_a_node(
    workdir: Path,
    registry_factory: Callable[..., Registry],
    node_factory: Callable[..., Node],
) -> None:
    upstream = registry_factory()
    app = images.build_image(workdir / "app", "1", [LayerSpec(30_000)], seed="tags-app")
    for tag in ("1", "2"):
        images.push(app, upstream.host, f"test/app:{tag}")
    local = images.build_image(workdir / "local", "1", [LayerSpec(20_000)], seed="tags-local")
    images_dir = workdir / "images"
    images_dir.mkdir()
    skopeo.save_archive(local, images_dir / "app.tar", f"{upstream.host}/test/app:seeded")
    skopeo.save_archive(local, images_dir / "local.tar", f"{upstream.host}/air/gapped:1.0")
    node = node_factory(
        {upstream.host: upstream.url},
        upstream.host,
        extra_args=["--images-dir", str(images_dir)],
    )
    ref = f"docker://{node.host}"

    listed = skopeo_json("list-tags", f"{ref}/test/app")
    assert listed["Tags"] == ["1", "2", "seeded"]
    assert skopeo_json("list-tags", f"{ref}/air/gapped")["Tags"] == ["1.0"]

    inspected = skopeo_json("inspect", f"{ref}/air/gapped:1.0")
    served = http_get(f"{node.url}/v2/air/gapped/manifests/1.0")
    assert inspected["Digest"] == "sha256:" + hashlib.sha256(served).hexdigest()
    assert inspected["RepoTags"] == ["1.0"]
    assert skopeo_json("inspect", f"{ref}/test/app:2")["Digest"] == app.digest

    catalog = json.loads(http_get(f"{node.url}/v2/_catalog"))
    assert catalog == {"repositories": ["air/gapped", "test/app"]}

    upstream.stop()
    assert skopeo_json("list-tags", f"{ref}/test/app")["Tags"] == ["seeded"]
    assert skopeo_json("inspect", f"{ref}/air/gapped:1.0")["Digest"] == inspected["Digest"]
