"""The status page at `GET /`: one HTML page for a person, drawn from the overview (`GET /status`).

No JavaScript and nothing fetched from elsewhere (its Content-Security-Policy forbids both): the
chart of bytes by source is inline SVG, the styles are inline, and the page reloads itself every
REFRESH_SECONDS. Everything shown that a client, a peer or a file name supplied is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any

from aiohttp import web

from distributed_images.settings import format_size
from node.oci.routes import ENDPOINT
from node.overview import Document, Overview

REFRESH_SECONDS = 10
COLORS = {"cache": "#7f8c8d", "peer": "#2e86de", "upstream": "#e67e22", "seed": "#27ae60"}
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 720, 170, 18, 20
POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.4em; margin: 0; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
header p { margin: .2em 0; color: #555; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .25em .5em;
        border-bottom: 1px solid #ddd; vertical-align: top; } th { color: #555; font-weight: 600; }
td.number { text-align: right; white-space: nowrap; }
.verdict { font-size: 1.2em; font-weight: 600; padding: .4em .7em; border-radius: 4px;
           display: inline-block; margin: 0; }
.ready .verdict { background: #e3f4e8; color: #1e7b3c; }
.not-ready .verdict { background: #fdecea; color: #a52714; }
.problems li, .skipped td.reason { color: #a52714; } .fix { color: #333; font-family: monospace; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .3em; }
.muted { color: #777; } meter { width: 20em; height: 1.2em; vertical-align: middle; }
code { font-size: .95em; }
"""


class StatusPage:
    def __init__(self, overview: Overview) -> None:
        self._overview = overview

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.document)

    async def page(self, request: web.Request) -> web.Response:
        request[ENDPOINT] = "status-page"
        body = render(await self._overview.document(), request.host)
        headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-store"}
        return web.Response(text=body, content_type="text/html", headers=headers)

    async def document(self, request: web.Request) -> web.Response:
        request[ENDPOINT] = "status"
        return web.json_response(await self._overview.document())


def render(doc: Document, host: str) -> str:
    sections = [
        _readiness(doc),
        _tracker(doc["tracker"], doc["peers"]),
        _traffic(doc["traffic"]),
        _pulls(doc["pulls"]),
        _archives(doc["archives"]),
        _store(doc["store"]),
    ]
    title = f"distributed-images node {host}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><p id="uptime">up {_duration(doc["uptime_seconds"])},'
        f" page drawn {time.strftime('%H:%M:%S UTC', time.gmtime())}, reloads every "
        f"{REFRESH_SECONDS} s</p></header>"
        + "".join(sections)
        + '<footer><p class="muted">The same as JSON: <a href="/status">/status</a>; '
        'Prometheus metrics: <a href="/metrics">/metrics</a>.</p></footer></body></html>\n'
    )


def _readiness(doc: Document) -> str:
    ready = bool(doc["ready"])
    verdict = "Ready: serving clients" if ready else f"Not ready: {doc['why']}"
    problems = "".join(f"<li>{escape(p)}</li>" for p in doc["problems"])
    return (
        f'<section id="readiness" class="{"ready" if ready else "not-ready"}" '
        f'data-ready="{str(ready).lower()}"><h2>Readiness</h2>'
        f'<p class="verdict">{escape(verdict)}</p>'
        + (f'<ul class="problems">{problems}</ul>' if problems else "")
        + "</section>"
    )


def _tracker(tracker: Document, peers: Document) -> str:
    address = tracker["address"]
    if address is None:
        state = "not started yet"
    else:
        kind = "embedded tracker (this node stands alone)" if tracker["embedded"] else "tracker"
        joined = "joined" if tracker["joined"] else "not joined: retrying (see the node's log)"
        state = f"{kind} at {address}: {joined}, {tracker['joins']} join(s) since start"
    rows = [
        (p["address"], p["torrents"], format_size(p["downloaded"]), format_size(p["uploaded"]))
        for p in peers["connected"]
    ]
    more = (
        f'<p class="muted">and {peers["more_connected"]} more</p>'
        if peers["more_connected"]
        else ""
    )
    table = _table(
        ("peer", "connections", "received", "sent"), rows, "connected-peers", numeric={1, 2, 3}
    )
    return (
        f'<section id="tracker" data-joined="{str(bool(tracker["joined"])).lower()}">'
        f'<h2>Tracker</h2><p class="state">{escape(state)}</p></section>'
        f'<section id="peers" data-connections="{peers["connections"]}"><h2>Peers</h2>'
        f"<p>{peers['connections']} open peer connection(s) now; since start "
        f"{format_size(peers['downloaded_bytes'])} downloaded from peers, "
        f"{format_size(peers['uploaded_bytes'])} uploaded to them.</p>"
        + (table + more if rows else "")
        + "</section>"
    )


def _traffic(traffic: Document) -> str:
    buckets: list[dict[str, int]] = traffic["buckets"]
    seconds = int(traffic["bucket_seconds"])
    minutes = len(buckets) * seconds // 60
    legend = "".join(
        f'<span class="source" data-source="{s}"><i class="swatch" style="background:'
        f'{COLORS[s]}"></i>{s}: {format_size(traffic["totals"][s])} since start</span>'
        for s in traffic["sources"]
    )
    return (
        f'<section id="traffic"><h2>Blob bytes delivered to clients, by source, last {minutes} '
        f"minutes</h2>{_chart(buckets, seconds)}"
        f'<p class="legend">{legend}</p></section>'
    )


def _chart(buckets: list[dict[str, int]], seconds: int) -> str:
    """Stacked bars, one per bucket, in bytes per second."""
    peak = max((sum(b.values()) for b in buckets), default=0)
    plot = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    width = CHART_WIDTH / max(len(buckets), 1)
    bars: list[str] = []
    for i, bucket in enumerate(buckets):
        y = float(CHART_TOP + plot)
        for source, size in bucket.items():
            if not size:
                continue
            height = max(plot * size / peak, 1.0)
            y -= height
            bars.append(
                f'<rect class="bar" data-source="{source}" data-bytes="{size}" '
                f'x="{i * width + 1:.1f}" y="{y:.1f}" width="{width - 2:.1f}" '
                f'height="{height:.1f}" fill="{COLORS[source]}"/>'
            )
    span = len(buckets) * seconds
    labels = [
        f'<text x="2" y="12">{format_size(peak / seconds)}/s</text>' if peak else "",
        f'<text x="2" y="{CHART_HEIGHT - 4}">{span // 60} min ago</text>',
        f'<text x="{CHART_WIDTH - 2}" y="{CHART_HEIGHT - 4}" text-anchor="end">now</text>',
    ]
    if not peak:
        labels.append(
            f'<text x="{CHART_WIDTH / 2}" y="{CHART_HEIGHT / 2}" text-anchor="middle" '
            'fill="#777">no blob bytes delivered in this time</text>'
        )
    axis = CHART_TOP + plot
    return (
        f'<svg id="traffic-chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'font-size="11" fill="#555"><line x1="0" y1="{axis}" x2="{CHART_WIDTH}" y2="{axis}" '
        f'stroke="#bbb"/>{"".join(bars)}{"".join(labels)}</svg>'
    )


def _pulls(pulls: list[Document]) -> str:
    rows = []
    for pull in pulls:
        parts = [f"{source} {format_size(n)}" for source, n in pull["bytes"].items() if n]
        broken = f", {pull['failed_blobs']} broken off" if pull["failed_blobs"] else ""
        started = time.strftime("%H:%M:%S", time.gmtime(pull["started"]))
        total = format_size(sum(pull["bytes"].values()))
        took = f"{pull['seconds']:.1f} s"
        sources = ", ".join(parts) or "no blob bytes"
        row = (pull["image"], pull["client"], started, took, pull["blobs"], total, sources)
        rows.append((*row, pull["state"] + broken))
    headers = ("image", "client", "started (UTC)", "took", "blobs", "bytes", "from", "state")
    table = _table(headers, rows, "pulls", numeric={3, 4, 5}, row_class="pull")
    empty = '<p class="muted">No pulls yet.</p>'
    return f'<section id="pulls"><h2>Recent pulls</h2>{table if rows else empty}</section>'


def _archives(archives: Document) -> str:
    if archives["images_dir"] is None:
        return (
            '<section id="archives"><h2>Images directory</h2><p class="muted">None: this node '
            "seeds nothing (--images-dir).</p></section>"
        )
    seeded = [
        (a["name"], a["format"], a["images"],
         ", ".join(a["tags"]) + (f" and {a['more_tags']} more" if a["more_tags"] else ""))
        for a in archives["seeded"]
    ]  # fmt: skip
    skipped = "".join(
        f'<tr class="skipped"><td>{escape(s["name"])}</td><td class="reason">'
        f'{escape(s["reason"])}</td><td class="fix">{escape(s["fix"] or "-")}</td></tr>'
        for s in archives["skipped"]
    )
    return (
        f'<section id="archives"><h2>Images directory {escape(archives["images_dir"])}</h2>'
        + (
            _table(("archive", "format", "images", "tags"), seeded, "seeded", numeric={2})
            if seeded
            else '<p class="muted">No archive seeded.</p>'
        )
        + (
            '<h2>Skipped archives</h2><table id="skipped"><tr><th>archive</th><th>why</th>'
            f"<th>fix</th></tr>{skipped}</table>"
            if skipped
            else ""
        )
        + "</section>"
    )


def _store(store: Document) -> str:
    used, quota = store["bytes"], store["quota_bytes"]
    if quota:
        share = f"{used / quota:.0%}"
        text = f"{format_size(used)} of a {format_size(quota)} quota ({share}); eviction down to "
        text += f"{store['low_watermark']:.0%} of it when full"
        meter = f'<meter id="store-meter" min="0" max="{quota}" value="{used}">{share}</meter> '
    else:
        text, meter = f"{format_size(used)}, no quota (--cache-max-bytes)", ""
    free = store["disk_free_bytes"]
    disk = f"; {format_size(free)} free on its disk" if free is not None else ""
    return (
        f'<section id="store" data-bytes="{used}" data-quota="{quota}"><h2>Store</h2>'
        f"<p>{meter}{escape(text)}{disk}. Data dir <code>{escape(store['data_dir'])}</code>, "
        f"written as uid {store['uid']}.</p></section>"
    )


def _table(
    headers: Iterable[str],
    rows: list[tuple[Any, ...]],
    table_id: str,
    numeric: set[int] | None = None,
    row_class: str = "",
) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{row_class}">'
        + "".join(
            f'<td class="{"number" if i in numeric else ""}">{escape(str(cell))}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"
