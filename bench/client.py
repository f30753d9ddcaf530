"""The pulling client: skopeo, run inside a node host, timed from its start to its exit.

skopeo copies into an OCI layout (`oci:`), which takes an image's layers at once, as containerd,
Docker and podman do; a `dir:` destination takes one layer after the other, so a pull waited for
each layer's first chunk in turn while the node was already fetching all of them. The layout
keeps the pushed bytes: layers are not compressed on the way, and the manifest is kept as it is.

`Pulls` starts one skopeo per host at once and waits for all of them; each pull's time is taken
by a thread blocked in `wait()`, so it is exact whatever the main loop is doing (drawing the
progress line, killing nodes for a churn scenario). Every copy is then checked against the image
that was pushed: the manifest the layout's index names and its bytes, and each blob file's
presence and size (skopeo has already checked each blob's digest while copying), and deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.image import Image
from bench.netns import Host


@dataclass
class Pull:
    host: Host
    reference: str
    out: Path
    started: float = 0.0
    ended: float | None = None
    returncode: int | None = None
    stderr: str = ""
    error: str | None = None
    killed: bool = False  # on purpose, by the scenario: not a failure of the system under test
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float | None:
        if self.ended is None or self.error is not None or self.killed:
            return None
        return self.ended - self.started

    @property
    def done(self) -> bool:
        return self.ended is not None

    def argv(self) -> list[str]:
        return [
            "skopeo", "copy", "--quiet", "--retry-times=0", "--src-tls-verify=false",
            "--src-no-creds", "--preserve-digests", "--dest-oci-accept-uncompressed-layers",
            f"docker://{self.reference}", f"oci:{self.out}:bench",
        ]  # fmt: skip

    def start(self, env: Mapping[str, str]) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self._process = subprocess.Popen(
            self.host.exec_argv(self.argv()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            start_new_session=True,
        )
        threading.Thread(target=self._wait, name=f"pull-{self.host.name}", daemon=True).start()

    def _wait(self) -> None:
        assert self._process is not None
        _, stderr = self._process.communicate()
        ended = time.monotonic()
        self.returncode = self._process.returncode
        self.stderr = stderr.strip()[-2000:]
        if self.returncode != 0 and not self.killed and self.error is None:
            self.error = f"skopeo exited with {self.returncode}: {self.stderr}"
        self.ended = ended  # last: `done` means every other field is final

    def kill(self, reason: str | None = None) -> None:
        """Stop the pull; with a reason it is a failure (a timeout), without, a churn kill."""
        self.killed = reason is None
        if reason is not None:
            self.error = reason
        if self._process is not None and self._process.poll() is None:
            self._process.kill()


class Pulls:
    """One pull per host, started together; `wait()` returns when every pull has ended."""

    def __init__(self, hosts: Sequence[Host], reference: Callable[[Host], str], out: Path) -> None:
        self.pulls = [Pull(h, reference(h), out / h.name) for h in hosts]
        self.upstream: dict[str, float] = {}  # when the upstream sent its bytes (bench.egress)

    def start(self, env: Mapping[str, str]) -> None:
        for pull in self.pulls:
            pull.start(env)

    def wait(
        self,
        timeout: float,
        tick: Callable[[float], None],
        on_done: Callable[[Pull], None],
    ) -> None:
        """Poll until every pull ended, calling `tick(elapsed)` and `on_done` for each end;
        a pull still running after `timeout` seconds is killed and counted as failed."""
        start = min(p.started for p in self.pulls)
        reported: set[int] = set()
        while len(reported) < len(self.pulls):
            elapsed = time.monotonic() - start
            for i, pull in enumerate(self.pulls):
                if pull.done and i not in reported:
                    reported.add(i)
                    on_done(pull)
                elif not pull.done and elapsed > timeout:
                    pull.kill(f"no result after {timeout:.0f} s")
            tick(elapsed)
            time.sleep(0.05)

    def verify(self, image: Image) -> None:
        """Check each finished copy against the pushed image, then delete it."""
        for pull in self.pulls:
            if pull.seconds is not None:
                pull.error = check_copy(pull.out, image)
            shutil.rmtree(pull.out, ignore_errors=True)

    @property
    def seconds(self) -> list[float]:
        return [s for s in (p.seconds for p in self.pulls) if s is not None]

    @property
    def failures(self) -> list[str]:
        return [f"{p.host.name}: {p.error}" for p in self.pulls if p.error is not None]


def check_copy(out: Path, image: Image) -> str | None:
    """What is wrong with skopeo's `oci:` copy of the image, or None."""
    blobs = out / "blobs" / "sha256"
    try:
        index = json.loads((out / "index.json").read_bytes())
        listed = index["manifests"][0]["digest"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        return f"no index.json naming a manifest was written ({e})"
    if listed != image.manifest.digest:
        return f"manifest {listed} is not the pushed {image.manifest.digest}"
    for blob in (image.manifest, image.config, *image.layers):
        path = blobs / blob.digest.removeprefix("sha256:")
        size = path.stat().st_size if path.is_file() else None
        if size != blob.size:
            return f"blob {blob.digest}: {size} bytes written, {blob.size} expected"
    manifest = blobs / image.manifest.digest.removeprefix("sha256:")
    if "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest() != image.manifest.digest:
        return f"manifest {image.manifest.digest} was written with other bytes"
    return None
