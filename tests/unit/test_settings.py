from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distributed_images import settings
from node.config import Config
from tracker.address import split as split_host_port


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Config)
    return settings.load(Config, parser.parse_args(argv), environ or {})


def test_defaults_match_the_documented_contract() -> None:
    config = parse([])
    assert config.listen == "0.0.0.0:8080"
    assert config.cluster.peer_listen == "0.0.0.0:6881"
    assert config.upstream.default_registry == "docker.io"
    assert config.cluster.tracker is None


def test_flags_beat_environment_beats_file(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('listen = "127.0.0.1:1"\nzone = "file"\ncache-max-bytes = "2GiB"\n')
    config = parse(
        ["--config", str(file), "--zone", "flag"],
        {"DI_ZONE": "env", "DI_LISTEN": "127.0.0.1:2", "DI_REGISTRY": "a=http://x b=http://y"},
    )
    assert config.cluster.zone == "flag"
    assert config.listen == "127.0.0.1:2"
    assert config.store.cache_max_bytes == 2 << 30
    assert config.upstream.registry == ["a=http://x", "b=http://y"]


def test_config_file_from_environment_and_unknown_keys(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('lisen = "typo"\n')
    with pytest.raises(settings.ConfigError, match="unknown keys: lisen"):
        parse([], {"DI_CONFIG": str(file)})


def test_bad_values_name_their_source() -> None:
    with pytest.raises(settings.ConfigError, match="DI_CACHE_MAX_BYTES"):
        parse([], {"DI_CACHE_MAX_BYTES": "lots"})


@pytest.mark.parametrize(
    ("text", "size"), [("512MiB", 512 << 20), ("1G", 10**9), ("100", 100), ("1.5KiB", 1536)]
)
def test_sizes(text: str, size: int) -> None:
    assert settings.parse_size(text) == size


def test_host_port() -> None:
    assert split_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port(":80") == ("0.0.0.0", 80)
    assert split_host_port("host", 7070) == ("host", 7070)
    with pytest.raises(ValueError):
        split_host_port("host")
