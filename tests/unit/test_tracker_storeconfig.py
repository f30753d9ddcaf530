"""`--store`: which URLs the tracker takes, and that logs never show a store's password."""

from __future__ import annotations

import pytest

from distributed_images.cli import build_parser
from distributed_images.settings import ConfigError, load
from tracker import app
from tracker.store.config import describe, store_url


@pytest.mark.parametrize(
    "text, expected",
    [
        ("memory", "memory"),
        ("", "memory"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://redis.images.svc:6380/2", "rediss://redis.images.svc:6380/2"),
        ("redis://:secret@redis:6379", "redis://:secret@redis:6379"),
    ],
)
def test_store_urls(text: str, expected: str) -> None:
    assert store_url(text) == expected


# A port out of range ended the tracker with a traceback where its URL was first logged.
@pytest.mark.parametrize(
    "text", ["mysql://db/1", "redis://", "redis://h:1/zero", "redis", "redis://h:99999/0"]
)
def test_bad_store_urls_are_refused_without_their_password(text: str) -> None:
    with pytest.raises(ValueError) as refused:
        store_url(text.replace("//", "//user:hunter2@", 1))
    assert "hunter2" not in str(refused.value)


def test_logs_show_a_store_url_without_credentials() -> None:
    assert describe("redis://user:hunter2@redis:6379/1") == "redis://redis:6379/1"
    assert describe("rediss://:hunter2@10.0.0.1/0") == "rediss://10.0.0.1/0"
    assert describe("memory") == "memory"


def test_the_store_flags_and_their_environment() -> None:
    parser, _ = build_parser("tracker")
    args = parser.parse_args(["tracker", "--store-password-file", "/run/secrets/redis"])
    config = load(app.Config, args, {"DI_STORE": "redis://redis:6379/0"})
    assert config.storage.store == "redis://redis:6379/0"
    assert str(config.storage.store_password_file) == "/run/secrets/redis"
    assert config.storage.shared
    assert not load(app.Config, parser.parse_args(["tracker"]), {}).storage.shared
    with pytest.raises(ConfigError, match="DI_STORE"):
        load(app.Config, parser.parse_args(["tracker"]), {"DI_STORE": "postgres://db"})
