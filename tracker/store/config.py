"""Where the tracker keeps its state: `--store memory` (the default) or a Redis URL.

`redis://HOST:PORT/DB` (plain) or `rediss://HOST:PORT/DB` (TLS, trusting `--store-tls-ca` or the
system's roots). The password never needs a command line: it is read from `--store-password-file`,
or it is part of the URL when that comes from the environment (`DI_STORE`, e.g. from a Kubernetes
Secret). Logs show the URL without its credentials. The `redis` package is imported only when a
Redis URL is given: the default and the embedded tracker need nothing else.
"""

from __future__ import annotations

import random
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracker.store import Store
from tracker.store.memory import MemoryStore

SCHEMES = ("redis", "rediss")
# Seconds. A refused connection fails at once, whatever this is; the bound is for a store that
# does not answer, and stays well inside a node's call deadline (5 s), so the node still hears
# "unreachable" and falls back. Not shorter: a connect that times out just as it completes
# leaves its socket open in redis-py, and a loop stalled a second on a busy host did that.
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 2.0
# Connections to Redis per replica: calls beyond them wait for one (a burst of nodes joining
# again after Redis restarted) for up to POOL_WAIT, rather than fail at once. A replica whose
# connections are all busy is busy, not cut off from Redis: answering "unreachable" after a
# short wait sends its nodes to another replica, all at once, and the calls in flight on their
# channels are cancelled with them.
MAX_CONNECTIONS = 64
POOL_WAIT = 15.0


def store_url(text: str) -> str:
    """`memory`, or a redis:// or rediss:// URL with a host."""
    text = text.strip()
    if text in ("", "memory"):
        return "memory"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError(f"expected memory or redis://HOST:PORT/DB, got {describe(text)!r}")
    try:
        parts.port  # noqa: B018 (urllib checks the port when it is read)
    except ValueError:
        shown = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        raise ValueError(f"the port in {shown!r} is not a port") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database in {describe(text)!r} is not a number")
    return text


def describe(url: str) -> str:
    """The URL without user name and password, for logs."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return url.split("@")[-1]
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class StoreConfig:
    store: str = field(
        default="memory",
        metadata={
            "help": "where the state lives: memory, or redis://HOST:PORT/DB (rediss:// for TLS)"
            " shared by tracker replicas",
            "metavar": "URL",
            "parse": store_url,
        },
    )
    store_password_file: Path | None = field(
        default=None, metadata={"help": "file holding the store's password", "metavar": "FILE"}
    )
    store_tls_ca: Path | None = field(
        default=None,
        metadata={
            "help": "PEM CA to trust for rediss:// (default: the system's)",
            "metavar": "FILE",
        },
    )

    @property
    def shared(self) -> bool:
        return store_url(self.store) != "memory"


def open_store(config: StoreConfig, lease_ttl: float, rng: random.Random | None = None) -> Store:
    url = store_url(config.store)
    if url == "memory":
        return MemoryStore(rng, lease_ttl)
    if config.store_tls_ca is not None and not url.startswith("rediss://"):
        raise ValueError("--store-tls-ca needs a rediss:// store URL")
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from tracker.store.redisstore import RedisStore

    password = None
    if config.store_password_file is not None:
        password = config.store_password_file.read_text().strip()
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 5,
    }
    if password is not None:
        options["password"] = password
    if config.store_tls_ca is not None:
        options["ssl_ca_certs"] = str(config.store_tls_ca)
    try:  # redis 7 and Valkey have no maintenance notifications: do not ask for them
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    except ImportError:
        pass
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT, **options
    )
    client = Redis.from_pool(pool)
    # The notification stream is read with blocking reads, on its own connection.
    reader = Redis.from_url(url, **{**options, "socket_timeout": COMMAND_TIMEOUT + 5})
    return RedisStore(client, reader, lease_ttl, rng)
