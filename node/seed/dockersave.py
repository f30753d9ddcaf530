"""Legacy `docker save` archives (and skopeo's `docker-archive:`): `manifest.json` lists each
image's config file, its layer files and its `RepoTags`.

Such an archive holds no registry manifest, so one is synthesized: a Docker schema 2 manifest
of the config and the layers as they are, uncompressed tars. A layer's digest is then the
sha256 of its file, which is its diff_id in the config (`rootfs.diff_ids`, in `Layers` order),
so digests are known before any layer is read, and the store checks each while copying it. The
synthesized manifest is a pure function of the archive's content: every node that imports the
same archive serves the same manifest digest.
"""

from __future__ import annotations

import json
import logging
import re

from node.oci import mediatypes
from node.seed.documents import digest_of, json_list, json_object, json_str, parse, strings
from node.seed.errors import ArchiveInvalid
from node.seed.plan import BlobNeed, Plan, sha256
from node.seed.sources import Contents

log = logging.getLogger(__name__)

DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
_HEX = re.compile(r"[a-f0-9]{64}")


def read_docker_save(contents: Contents, archive: str) -> Plan:
    entries = json_list(parse(contents.document("manifest.json"), "manifest.json"), "manifest.json")
    plan = Plan("docker-archive")
    for i, item in enumerate(entries):
        entry = json_object(item, f"manifest.json[{i}]")
        digest = _image(contents, plan, entry, f"manifest.json[{i}]")
        plan.images.append(digest)
        for name in strings(entry.get("RepoTags") or [], f"manifest.json[{i}] RepoTags"):
            plan.tag(name, digest, archive)
    return plan


def _image(contents: Contents, plan: Plan, entry: dict[str, object], what: str) -> str:
    """Plan one image of manifest.json; returns the synthesized manifest's digest."""
    config_name = json_str(entry.get("Config"), f"{what} Config")
    config_body = contents.document(config_name)
    config_digest = sha256(config_body)
    named = _named_digest(config_name)
    if named and named != config_digest:
        raise ArchiveInvalid("digest mismatch", {"member": config_name, "actual": config_digest})
    config = json_object(parse(config_body, config_name), config_name)
    rootfs = json_object(config.get("rootfs"), f"{config_name} rootfs")
    what_ids = f"{config_name} rootfs.diff_ids"
    diff_ids = [digest_of(d, what_ids) for d in json_list(rootfs.get("diff_ids"), what_ids)]
    layer_names = strings(entry.get("Layers"), f"{what} Layers")
    if len(layer_names) != len(diff_ids):
        raise ArchiveInvalid(
            "layer count differs from the config's diff_ids",
            {"config": config_name, "layers": len(layer_names), "diff_ids": len(diff_ids)},
        )
    layers = []
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        member = contents.member(name)
        plan.need(BlobNeed(diff_id, member.size, DOCKER_LAYER_TAR, member))
        layers.append(_descriptor(DOCKER_LAYER_TAR, diff_id, member.size))
    plan.document(config_digest, config_body, mediatypes.DOCKER_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "config": _descriptor(mediatypes.DOCKER_CONFIG, config_digest, len(config_body)),
        "layers": layers,
    }
    body = json.dumps(manifest, indent=3).encode()
    digest = sha256(body)
    plan.document(digest, body, mediatypes.DOCKER_MANIFEST)
    return digest


def _named_digest(member: str) -> str | None:
    """The digest a member's name gives: docker save names a config `<hex>.json`, Docker 25's
    archives `blobs/sha256/<hex>`."""
    base = member.rpartition("/")[2].removesuffix(".json")
    return "sha256:" + base if _HEX.fullmatch(base) else None


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "size": size, "digest": digest}
