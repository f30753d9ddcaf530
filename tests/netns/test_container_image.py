"""The container image as users build and run it: the Dockerfile built by podman, then the
README's command,

    docker run -d --name distributed_images -p 8080:8080 \\
        -v /path/to/local/images:/app/images distributed_images_image

run as `podman run` (plus the ulimits this machine needs), with an images directory holding
a `docker save`-style archive and one its user cannot read (mode 0600, root's, as `docker save
-o` leaves it): the registry API and readiness, the seeded image pulled through it by skopeo
with its digests checked, the user it runs as, its health check, a restart that keeps its
cache, with the images mounted read-write and read-only; the tracker from the same image, healthy;
and a cache volume or images directory it may not use, refused in one line.

See tests/support/container.py for how podman runs here. Root only (podman, namespaces).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import container, images, skopeo
from tests.support.container import ULIMITS, Engine
from tests.support.images import LayerSpec
from tests.support.process import http_status, wait_until

CHECKOUT = Path(__file__).resolve().parents[2]
IMAGE = "distributed_images_image"
NAME = "distributed_images"
SEEDED = "library/seeded-app:1"  # docker.io/library/seeded-app:1, what a request without ns means
NODE = "http://127.0.0.1:8080"
UID = 10001


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (rootful podman, network namespaces)"
    tools = ["podman", "runc", "debootstrap", "skopeo", "nsenter", "ip"]
    missing = [t for t in tools if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine()
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    with container.timed("stand-in base (python:3.11-slim)"):
        base = container.python_base()
    with container.timed("podman import of the base"):
        engine.import_base(base)
    with container.timed("podman build --format docker"):
        engine.build(CHECKOUT, IMAGE)
    return IMAGE


@dataclass(frozen=True)
class Archives:
    directory: Path
    seeded: Path
    config_digest: str  # of the seeded image, as its archive holds it
    unreadable: Path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    root = tmp_path_factory.mktemp("container-images")
    layers = [LayerSpec(400_000), LayerSpec(100_000, gzip=True)]
    app = images.build_image(root / "src", "1", layers, seed="container-app")
    directory = root / "images"
    directory.mkdir()
    seeded = skopeo.save_archive(app, directory / "seeded.tar", f"docker.io/{SEEDED}")
    unreadable = directory / "saved.tar"
    shutil.copy(seeded, unreadable)
    unreadable.chmod(0o600)  # root's, like `docker save -o`: the container's user cannot read it
    config = app.image().config.digest
    return Archives(directory, seeded, config, unreadable)


def readyz(engine: Engine) -> tuple[int | None, str]:
    def ask() -> tuple[int | None, str]:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{NODE}/readyz", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            e.close()
            return e.code, body
        except OSError:
            return None, ""

    return engine.call(ask)


def wait_ready(engine: Engine, name: str = NAME) -> str:
    """/readyz's body once it answers 200; fails with the container's log if it never does."""
    wait_until(
        lambda: readyz(engine)[0] == 200,
        60.0,
        f"{name} ready on {NODE}",
        interval=0.2,
        on_timeout=lambda: engine.logs(name),
    )
    return readyz(engine)[1]


def pull_seeded(engine: Engine, out: Path) -> dict[str, int]:
    """skopeo copies the seeded image out of the container; its blobs, checked."""
    container.run_in(
        engine,
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-no-creds",
         "--retry-times=0", f"docker://127.0.0.1:8080/{SEEDED}", f"dir:{out}"],
    )  # fmt: skip
    return skopeo.verify_dir(out)


def healthy(engine: Engine, name: str) -> bool:
    return engine.podman("healthcheck", "run", name, check=False).returncode == 0


def test_the_image_keeps_its_health_check_and_runs_as_an_unprivileged_user(
    engine: Engine, image: str
) -> None:
    inspected = engine.inspect("image", image)
    config, check = inspected["Config"], inspected.get("Healthcheck")
    assert isinstance(config, dict) and config["User"] == f"{UID}:{UID}"
    assert isinstance(check, dict), f"no health check (built without --format docker?): {check}"
    assert "distributed_images.healthcheck" in " ".join(check["Test"])


@pytest.mark.parametrize("mount", ["", ":ro"], ids=["images", "images-read-only"])
def test_the_readme_command_serves_the_seeded_archive_and_keeps_its_cache(
    engine: Engine, image: str, archives: Archives, tmp_path: Path, mount: str
) -> None:
    # The README's command, as `podman run`, with the ulimits this machine needs.
    volume = f"{archives.directory}:/app/images{mount}"
    engine.podman("run", "-d", "--name", NAME, "-p", "8080:8080", "-v", volume, *ULIMITS, image)
    try:
        body = wait_ready(engine)
        assert body.startswith("ready\narchive skipped: saved.tar: cannot read ")
        assert f"(owner uid 0, mode 0600; this node runs as uid {UID})" in body
        assert "fix: make it readable by uid 10001: `chmod a+r /app/images/saved.tar`" in body
        assert engine.call(lambda: http_status(f"{NODE}/v2/")) == 200

        blobs = pull_seeded(engine, tmp_path / "pull")
        assert archives.config_digest in blobs
        inspected = json.loads(container.run_in(engine, [
            "skopeo", "inspect", "--tls-verify=false", "--no-creds", "--retry-times=0",
            f"docker://127.0.0.1:8080/{SEEDED}"]))  # fmt: skip
        assert inspected["RepoTags"] == ["1"]
        manifest = (tmp_path / "pull" / "manifest.json").read_bytes()
        assert inspected["Digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()

        pid = engine.state(NAME)["Pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{UID}\s", status, re.MULTILINE), status
        owner = engine.podman("exec", NAME, "stat", "-c", "%u", "/var/lib/distributed-images/blobs")
        assert owner.stdout.strip() == str(UID)
        assert healthy(engine, NAME)

        engine.podman("restart", "--time", "10", NAME)
        wait_ready(engine)
        starts = [line for line in engine.logs(NAME).splitlines() if 'msg="node ready"' in line]
        assert len(starts) == 2, starts
        assert "blobs=0" in starts[0]
        kept = int(re.search(r"blobs=(\d+)", starts[1]).group(1))  # type: ignore[union-attr]
        assert kept >= len(blobs), starts[1]
        assert pull_seeded(engine, tmp_path / "again") == blobs
        engine.podman("stop", "--time", "10", NAME)
        assert engine.state(NAME)["ExitCode"] == 0, engine.logs(NAME)
    finally:
        engine.remove(NAME)


def test_the_tracker_from_the_same_image_is_healthy(engine: Engine, image: str) -> None:
    engine.podman("run", "-d", "--name", "tracker", *ULIMITS, image, "tracker")
    try:
        wait_until(
            lambda: healthy(engine, "tracker"),
            60.0,
            "the tracker's health check passing",
            interval=0.5,
            on_timeout=lambda: engine.logs("tracker"),
        )
    finally:
        engine.remove("tracker")


@pytest.mark.parametrize(
    ("target", "mode", "says"),
    [
        ("/var/lib/distributed-images", 0o755,
         f"the data dir /var/lib/distributed-images is not writable by uid {UID}"),
        ("/app/images", 0o700, f"the images dir /app/images is not readable by uid {UID}"),
    ],
    ids=["cache-volume-owned-by-root", "images-dir-closed"],
)  # fmt: skip
def test_a_directory_the_container_may_not_use_is_refused_in_one_line(
    engine: Engine, image: str, tmp_path: Path, target: str, mode: int, says: str
) -> None:
    host_dir = tmp_path / "mounted"
    host_dir.mkdir(mode=mode)
    host_dir.chmod(mode)
    name = "refused"
    engine.podman("run", "-d", "--name", name, "-v", f"{host_dir}:{target}", *ULIMITS, image)
    try:
        assert engine.wait_exit(name) == 1
        lines = [line for line in engine.logs(name).splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"distributed-images node: {says} (")
        if "data dir" in says:
            assert f"`chown -R {UID}:{UID} {target}` (on the host" in lines[0]
        else:
            assert f"`chmod a+rx {target}`" in lines[0]
    finally:
        engine.remove(name)
