"""skopeo as a pulling client, and the check that what it wrote is what was asked for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.support.images import OciImage
from tests.support.process import run


def pull(
    host: str,
    reference: str,
    out: Path,
    *,
    creds: str | None = None,
    arch: str | None = None,
    os: str | None = None,
    timeout: float = 180.0,
) -> Path:
    """`skopeo copy docker://host/reference dir:out` over plain HTTP; returns `out`.

    `reference` is `name:tag` or `name@sha256:...`. Fails (CommandFailed) on any error.
    """
    argv = ["skopeo"]
    if arch:
        argv.append(f"--override-arch={arch}")
    if os:
        argv.append(f"--override-os={os}")
    argv += ["copy", "--quiet", "--src-tls-verify=false", "--retry-times=0"]
    argv += [f"--src-creds={creds}"] if creds else ["--src-no-creds"]
    argv += [f"docker://{host}/{reference}", f"dir:{out}"]
    run(argv, timeout=timeout)
    return out


def verify_dir(out: Path) -> dict[str, int]:
    """Check every blob skopeo wrote to a `dir:` destination against its file name (the hex of
    its sha256) and the manifest's descriptors; return digest -> size of the blobs."""
    manifest = json.loads((out / "manifest.json").read_bytes())
    descriptors = [manifest["config"], *manifest["layers"]]
    found: dict[str, int] = {}
    for descriptor in descriptors:
        digest = descriptor["digest"]
        data = (out / digest.removeprefix("sha256:")).read_bytes()
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        assert actual == digest, f"{out}: file {digest} holds bytes of {actual}"
        assert len(data) == descriptor["size"], f"{out}: {digest} is {len(data)} bytes"
        found[digest] = len(data)
    for path in out.iterdir():
        if path.name not in ("manifest.json", "version"):
            assert "sha256:" + path.name in found, f"{out}: unexpected file {path.name}"
    return found


def manifest_digest(out: Path) -> str:
    return "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


def save_archive(image: OciImage, archive: Path, reference: str) -> Path:
    """A `docker save`-style archive of `image` tagged `reference`, as skopeo writes one (to
    seed from an images directory)."""
    source = f"oci:{image.layout}:{image.tag}"
    run(["skopeo", "copy", "--quiet", source, f"docker-archive:{archive}:{reference}"])
    return archive
