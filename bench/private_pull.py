"""Private images benchmark: a warm pull of a private image by a client whose credentials the
upstream accepts, through a node that already holds the image, side by side with the same pull of
the same image from a public repository, in one run.

    python -m bench.private_pull [--size 128MiB] [--layers 2] [--repeat 5] [--out DIR]

The upstream is Debian's `docker-registry` behind token auth. Both repositories hold the same
image; each pull is `skopeo copy` to a fresh directory, private with `--src-creds`, public
without. Reported per kind: median and spread of the pull times, their ratio, and the requests
each pull cost the upstream (registry and token service). The access check a credential costs
once per TTL is measured apart: the first warm pull by a second user.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from distributed_images.settings import parse_size
from tests.support import images
from tests.support.node import Node
from tests.support.registry import Registry
from tests.support.tokenserver import TokenPolicy, TokenServer

ADMIN = ("admin", "bench-admin-pw")
USERS = {"reader": "bench-reader-pw", "second": "bench-second-pw"}
PRIVATE, PUBLIC = "bench/private", "bench/public"


@dataclass(frozen=True)
class Pull:
    seconds: float
    registry_requests: int
    token_requests: int


class Setup:
    def __init__(self, workdir: Path) -> None:
        users = {ADMIN[0]: ADMIN[1], **USERS}
        grants = {user: {PRIVATE} for user in USERS}
        self.tokens = TokenServer(TokenPolicy(users, {PUBLIC}, grants), workdir / "tokens")
        self.tokens.start()  # the registry's config names its address
        self.registry = Registry(
            workdir / "registry", name="registry", token_auth=self.tokens.registry_auth()
        )
        self.workdir = workdir

    def start(self, size: int, layers: int) -> images.OciImage:
        self.registry.start()
        specs = [images.LayerSpec(size // layers) for _ in range(layers)]
        image = images.build_image(self.workdir / "image", "1", specs, seed="bench-private")
        for repository in (PRIVATE, PUBLIC):
            images.push(image, self.registry.host, f"{repository}:1", creds=":".join(ADMIN))
        return image

    def stop(self) -> None:
        self.registry.stop()
        self.tokens.stop()

    def pull(self, node: Node, repository: str, user: str | None) -> Pull:
        mark = self.registry.mark()
        denied = len(self.registry.denied())
        tokens = len(self.tokens.requests_snapshot())
        out = self.workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--retry-times=0"]
        argv += [f"--src-creds={user}:{USERS[user]}"] if user else ["--src-no-creds"]
        argv += [f"docker://{node.host}/{repository}:1", f"dir:{out}"]
        started = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        seconds = time.monotonic() - started
        requests = len(self.registry.entries(mark)) + len(self.registry.denied()) - denied
        return Pull(seconds, requests, len(self.tokens.requests_snapshot()) - tokens)


def run(size: int, layers: int, repeat: int, workdir: Path) -> dict[str, object]:
    setup = Setup(workdir)
    node = Node(workdir / "node", {setup.registry.host: setup.registry.url}, setup.registry.host)
    try:
        image = setup.start(size, layers)
        node.start()
        cold = {
            "private": setup.pull(node, PRIVATE, "reader"),
            "public": setup.pull(node, PUBLIC, None),
        }
        warm: dict[str, list[Pull]] = {"private": [], "public": []}
        for _ in range(repeat):  # alternated, so both see the same machine
            warm["private"].append(setup.pull(node, PRIVATE, "reader"))
            warm["public"].append(setup.pull(node, PUBLIC, None))
        checked = setup.pull(node, PRIVATE, "second")
        cpu = node_cpu_seconds(node)
    finally:
        node.stop()
        setup.stop()
    return report(image, cold, warm, checked, cpu)


def node_cpu_seconds(node: Node) -> float:
    fields = Path(f"/proc/{node.pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100


def report(
    image: images.OciImage,
    cold: dict[str, Pull],
    warm: dict[str, list[Pull]],
    checked: Pull,
    cpu: float,
) -> dict[str, object]:
    def summary(pulls: list[Pull]) -> dict[str, object]:
        times = [p.seconds for p in pulls]
        return {
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "registry_requests_per_pull": sorted({p.registry_requests for p in pulls}),
            "token_requests_per_pull": sorted({p.token_requests for p in pulls}),
        }

    private, public = summary(warm["private"]), summary(warm["public"])
    ratio = statistics.median(p.seconds for p in warm["private"]) / statistics.median(
        p.seconds for p in warm["public"]
    )
    return {
        "image_bytes": image.image().blob_bytes,
        "layers": len(image.image().layers),
        "repeat": len(warm["private"]),
        "warm_private": private,
        "warm_public": public,
        "private_vs_public": round(ratio, 3),
        "target": "private_vs_public <= 1.10",
        "cold": {
            k: {
                "seconds": round(p.seconds, 3),
                "registry_requests": p.registry_requests,
                "token_requests": p.token_requests,
            }
            for k, p in cold.items()
        },
        "warm_private_new_credential": {
            "seconds": round(checked.seconds, 3),
            "registry_requests": checked.registry_requests,
            "token_requests": checked.token_requests,
        },
        "node_cpu_seconds": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=128 << 20)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-private-") as tmp:
        result = run(args.size, args.layers, args.repeat, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "private_pull.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
