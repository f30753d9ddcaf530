"""`distributed-images status`: the cluster as its tracker sees it (`--tracker`), and one node as
it sees itself (`--node`; the local node when no tracker is named): ready or not and why, its
tracker and peers, bytes by source, recent pulls, seeded and skipped archives with the fix, its
store. The node's part is its `GET /status` document, which its status page draws too.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, TextIO

from distributed_images.settings import format_size
from tracker import status as cluster
from tracker.errors import TrackerError

HELP = "show a node's state (--node, default the local one) and the cluster's (--tracker)"
LOCAL_NODE = "http://127.0.0.1:8080"
MAX_BYTES = 4 << 20
MAX_PULLS = 10


@dataclass
class Config(cluster.Config):
    node: str | None = field(
        default=None,
        metadata={
            "help": f"a node's URL: show its own state (default without --tracker: {LOCAL_NODE})",
            "metavar": "URL",
        },
    )


class NodeUnreachable(Exception):
    pass


def fetch_node(url: str, timeout: float) -> dict[str, Any]:
    """The node's `GET /status` document."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
    try:
        with opener.open(f"{url.rstrip('/')}/status", timeout=timeout) as response:
            document = json.loads(response.read(MAX_BYTES))
    except urllib.error.HTTPError as e:
        e.close()
        raise NodeUnreachable(f"GET /status answered {e.code}: is this a node?") from None
    except (OSError, ValueError) as e:
        raise NodeUnreachable(f"not answering ({e})") from None
    if not isinstance(document, dict):
        raise NodeUnreachable("GET /status did not answer a JSON object: is this a node?")
    return document


def main(config: Config) -> int:
    node = config.node or (None if config.connection.tracker else LOCAL_NODE)
    if node is None:
        return cluster.main(config)
    try:
        document = fetch_node(node, config.connection.timeout)
    except NodeUnreachable as e:
        print(f"status: node {node}: {e}", file=sys.stderr)
        return 1
    if config.json and config.connection.tracker:
        return _both_as_json(config, node, document)
    if config.connection.tracker:
        code = cluster.main(config)
        sys.stdout.write("\n")
        if code:
            return code
    if config.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_node(node, document, sys.stdout)
    return 0


def _both_as_json(config: Config, node: str, document: dict[str, Any]) -> int:
    """One object: the cluster's (DESIGN section 6) with the node's under `node`."""
    try:
        status = asyncio.run(cluster.fetch(config))
    except TrackerError as e:
        print(f"status: {config.connection.tracker}: {e.message}", file=sys.stderr)
        return 1
    out = cluster.as_json(status, config.connection.tracker or "")
    json.dump({**out, "node": {"url": node, **document}}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def write_node(url: str, doc: dict[str, Any], out: TextIO) -> None:
    verdict = "ready" if doc.get("ready") else f"NOT READY: {doc.get('why')}"
    out.write(f"node {url}: {verdict}, up {doc.get('uptime_seconds', 0):.0f} s\n")
    for problem in doc.get("problems", []):
        out.write(f"  ! {problem}\n")
    tracker = doc.get("tracker", {})
    kind = "embedded tracker" if tracker.get("embedded") else "tracker"
    joined = "joined" if tracker.get("joined") else "NOT joined"
    out.write(f"{kind}: {tracker.get('address')}, {joined}\n")
    peers = doc.get("peers", {})
    out.write(
        f"peers: {peers.get('connections', 0)} open connection(s), "
        f"{format_size(peers.get('downloaded_bytes', 0))} downloaded, "
        f"{format_size(peers.get('uploaded_bytes', 0))} uploaded\n"
    )
    for peer in peers.get("connected", []):
        out.write(
            f"  {peer.get('address')}: {format_size(peer.get('downloaded', 0))} received, "
            f"{format_size(peer.get('uploaded', 0))} sent\n"
        )
    totals = doc.get("traffic", {}).get("totals", {})
    delivered = ", ".join(f"{source} {format_size(n)}" for source, n in totals.items())
    out.write(f"delivered to clients since start: {delivered}\n")
    _write_store(doc.get("store", {}), out)
    _write_archives(doc.get("archives", {}), out)
    _write_pulls(doc.get("pulls", []), out)


def _write_store(store: dict[str, Any], out: TextIO) -> None:
    quota = store.get("quota_bytes") or 0
    of = f" of a {format_size(quota)} quota" if quota else " (no quota)"
    out.write(f"store: {format_size(store.get('bytes', 0))}{of} in {store.get('data_dir')}\n")


def _write_archives(archives: dict[str, Any], out: TextIO) -> None:
    if not archives.get("images_dir"):
        out.write("images directory: none\n")
        return
    seeded, skipped = archives.get("seeded", []), archives.get("skipped", [])
    out.write(
        f"images directory {archives['images_dir']}: {len(seeded)} archive(s) seeded, "
        f"{len(skipped)} skipped\n"
    )
    for archive in seeded:
        tags = ", ".join(archive.get("tags", [])) or "no tags"
        out.write(f"  seeded   {archive.get('name')} ({archive.get('format')}): {tags}\n")
    for archive in skipped:
        out.write(f"  SKIPPED  {archive.get('name')}: {archive.get('reason')}\n")
        if archive.get("fix"):
            out.write(f"           fix: {archive['fix']}\n")


def _write_pulls(pulls: list[dict[str, Any]], out: TextIO) -> None:
    if not pulls:
        return
    out.write("recent pulls:\n")
    for pull in pulls[:MAX_PULLS]:
        started = time.strftime("%H:%M:%S", time.gmtime(pull.get("started", 0)))
        sources = ", ".join(f"{s} {format_size(n)}" for s, n in pull.get("bytes", {}).items() if n)
        out.write(
            f"  {started} {pull.get('image')} for {pull.get('client')}: "
            f"{pull.get('seconds', 0):.1f} s, {pull.get('blobs', 0)} blob(s)"
            f"{': ' + sources if sources else ''} ({pull.get('state')})\n"
        )
