"""The node binary's configuration: one dataclass per module, composed here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from distributed_images.logs import level_field
from distributed_images.settings import as_given, parse_size
from node.access.config import AccessConfig
from node.downloads import DEFAULT_MAX_SIZE, parse_max_size
from node.scrub import ScrubConfig
from node.seed.config import SeedConfig
from node.upstream.reach import Network, parse_network
from node.upstream.registries import PUBLIC_REGISTRIES, parse_mapping, parse_namespace
from tracker import address, limits, targets


def _default_auth_file() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


@dataclass
class StoreConfig:
    data_dir: Path = field(
        default=Path("./data"), metadata={"help": "where blobs and metadata live", "metavar": "DIR"}
    )
    cache_max_bytes: int = field(
        default=0,
        metadata={
            "help": "disk quota for cached content (0: unlimited); accepts 50GiB",
            "parse": parse_size,
            "metavar": "N",
        },
    )
    cache_low_watermark: float = field(
        default=0.9, metadata={"max": 1, "help": "eviction stops at this fraction of the quota"}
    )
    fsync: bool = field(
        default=True,
        metadata={
            "help": "put each blob on disk (fsync) before it counts as stored; without it, blobs"
            " stored since the last clean stop are verified after an unclean one"
        },
    )


@dataclass
class UpstreamConfig:
    registry: list[str] = field(
        default_factory=list,
        metadata={
            "parse": as_given(parse_mapping),
            "help": "map a namespace to an upstream URL, NS=URL (repeatable)",
            "metavar": "NS=URL",
        },
    )
    default_registry: str = field(
        default="docker.io",
        metadata={"help": "namespace of requests without ?ns=", "metavar": "NS"},
    )
    public_registries: list[str] = field(
        default_factory=lambda: list(PUBLIC_REGISTRIES),
        metadata={
            "parse": parse_namespace,
            "help": "public registries mirrored without a --registry entry (repeatable, or"
            " comma-separated; an empty value: none); any other ns is answered 404",
            "metavar": "NS",
        },
    )
    private_upstream_networks: list[Network] = field(
        default_factory=list,
        metadata={
            "parse": parse_network,
            "help": "non-public networks (CIDR) that configured registries and their redirects"
            " may reach beyond their own address, e.g. a private registry's blob storage",
            "metavar": "CIDR",
        },
    )
    max_blob_size: int = field(
        default=DEFAULT_MAX_SIZE,
        metadata={
            "help": "the largest blob this node fetches, whatever a manifest or an upstream"
            " declares (larger ones are answered 404: clients pull them from the registry);"
            " at most 1TiB",
            "parse": parse_max_size,
            "metavar": "N",
        },
    )
    cold_fetches: int = field(
        default=16,
        metadata={
            "min": 1,
            "help": "blobs fetched into this node at once, from upstream or the cluster; more"
            " wait their turn",
            "metavar": "N",
        },
    )
    upstream_connections: int = field(
        default=64,
        metadata={
            "min": 1,
            "help": "connections open at once to the public registries, and to each configured one",
            "metavar": "N",
        },
    )
    auth_file: str = field(
        default_factory=_default_auth_file,
        metadata={"help": "Docker config.json with upstream credentials", "metavar": "FILE"},
    )
    upstream_timeout: float = field(
        default=30.0,
        metadata={"above": 0, "help": "seconds to wait for an upstream to answer", "metavar": "S"},
    )
    upstream_retries: int = field(
        default=3, metadata={"help": "retries on connection errors and 5xx", "metavar": "N"}
    )


@dataclass
class ClusterConfig:
    tracker: str | None = field(
        default=None,
        metadata={
            "parse": as_given(targets.parse),
            "help": "tracker HOST:PORT (default: run one in-process)",
            "metavar": "HOST:PORT",
        },
    )
    node_id: str | None = field(
        default=None,
        metadata={
            "parse": limits.flag_parser(limits.node_id),
            "help": "this node's id in the cluster (default: the credential's, else the"
            " registry address)",
            "metavar": "ID",
        },
    )
    credential_file: Path | None = field(
        default=None,
        metadata={
            "help": "this node's credential for the tracker (distributed-images credential)",
            "metavar": "FILE",
        },
    )
    tracker_tls_ca: Path | None = field(
        default=None,
        metadata={"help": "talk TLS to the tracker, trusting this PEM CA", "metavar": "FILE"},
    )
    peer_listen: str = field(
        default="0.0.0.0:6881",
        metadata={
            "parse": as_given(address.split),
            "help": "peer-to-peer listen address",
            "metavar": "HOST:PORT",
        },
    )
    advertise_host: str | None = field(
        default=None,
        metadata={"help": "address other nodes reach this one at", "metavar": "HOST"},
    )
    zone: str = field(
        default="",
        metadata={
            "parse": limits.flag_parser(limits.zone),
            "help": "topology zone, preferred for peers",
            "metavar": "NAME",
        },
    )
    stall_timeout: float = field(
        default=10.0,
        metadata={
            "above": 0,
            "help": "seconds a chunk may go without a byte from its peers before it is asked"
            " for again; after twice this it is fetched from upstream directly",
            "metavar": "S",
        },
    )
    upload_limit: int = field(
        default=0,
        metadata={
            "help": "peer upload limit in bytes/s (0: none)",
            "parse": parse_size,
            "metavar": "BYTES/S",
        },
    )
    download_limit: int = field(
        default=0,
        metadata={
            "help": "peer download limit in bytes/s (0: none)",
            "parse": parse_size,
            "metavar": "BYTES/S",
        },
    )


@dataclass
class Config:
    listen: str = field(
        default="0.0.0.0:8080",
        metadata={
            "parse": as_given(address.split),
            "help": "registry API listen address",
            "metavar": "HOST:PORT",
        },
    )
    metrics_listen: str | None = field(
        default=None,
        metadata={
            "parse": as_given(address.split),
            "help": "also serve /metrics, /healthz and /readyz here, for when --listen is the"
            " host's loopback (default: only on --listen)",
            "metavar": "HOST:PORT",
        },
    )
    images_dir: Path | None = field(
        default=None, metadata={"help": "directory of image archives to seed", "metavar": "DIR"}
    )
    prefetch: int = field(
        default=3,
        metadata={
            "help": "once a client asks for a layer of an image, fetch its config and other"
            " layers, N at once, before it asks (0: off)",
            "metavar": "N",
        },
    )
    max_connections: int = field(
        default=1024,
        metadata={
            "min": 1,
            "help": "client connections open at once on each listen address (fewer when the"
            " process's file limit is low); at the limit the one idle longest is closed",
            "metavar": "N",
        },
    )
    log_level: str = level_field("info")
    store: StoreConfig = field(default_factory=StoreConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    seed: SeedConfig = field(default_factory=SeedConfig)
    scrub: ScrubConfig = field(default_factory=ScrubConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
