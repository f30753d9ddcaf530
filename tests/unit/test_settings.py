from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from distributed_images import settings
from distributed_images.cli import COMMANDS
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


@pytest.mark.parametrize("content", [None, b"\xaa\xff = 1\n"])
def test_a_config_file_that_cannot_be_read_is_named(tmp_path: Path, content: bytes | None) -> None:
    """A directory, or bytes that are not UTF-8, ended the command with a traceback."""
    file = tmp_path / "node.toml"
    if content is None:
        file.mkdir()
    else:
        file.write_bytes(content)
    with pytest.raises(settings.ConfigError, match=str(file)):
        parse(["--config", str(file)])


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


def _config_types() -> dict[str, type]:
    return {name: importlib.import_module(module).Config for name, (module, _) in COMMANDS.items()}


def _numeric_flags() -> list[tuple[str, str]]:
    return [
        (name, leaf.flag)
        for name, config_type in _config_types().items()
        for leaf in settings._leaves(config_type)
        if leaf.kind in (int, float)
    ]


def _load(command: str, argv: list[str]) -> object:
    config_type = _config_types()[command]
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, config_type)
    # A command's operand (preheat's image) is not what these tests are about.
    positional = [leaf for leaf in settings._leaves(config_type) if leaf.positional]
    return settings.load(config_type, parser.parse_args(["x"] * len(positional) + argv), {})


@pytest.mark.parametrize(("command", "flag"), _numeric_flags())
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_no_number_a_command_takes_may_be_negative_or_endless(
    command: str, flag: str, value: str
) -> None:
    with pytest.raises(settings.ConfigError, match=f"^{flag}: "):
        _load(command, [f"{flag}={value}"])


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        # A semaphore of 0: every cold pull would wait forever.
        ("node", "--cold-fetches"),
        ("node", "--upstream-connections"),
        ("node", "--max-connections"),
        ("node", "--seed-workers"),
        ("node", "--upstream-timeout"),
        ("node", "--stall-timeout"),
        ("node", "--seed-scan-interval"),
        # No lease ever granted: every cold chunk would wait for one.
        ("tracker", "--upstream-leases"),
        ("tracker", "--blob-leases"),
        ("tracker", "--max-leases"),
        ("tracker", "--max-peers"),
        ("tracker", "--fanout"),
        # Heartbeats in a tight loop, nodes forgotten as they join.
        ("tracker", "--heartbeat-interval"),
        ("tracker", "--node-ttl"),
        ("tracker", "--lease-ttl"),
        ("bench", "--repeat"),
        ("bench", "--node-mbit"),
    ],
)
def test_a_count_or_a_time_of_zero_is_refused_where_it_would_stop_the_work(
    command: str, flag: str
) -> None:
    with pytest.raises(settings.ConfigError, match=f"^{flag}: must be "):
        _load(command, [f"{flag}=0"])


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("node", "--cache-max-bytes"),
        ("node", "--upload-limit"),
        ("node", "--download-limit"),
        ("node", "--prefetch"),
        ("node", "--scrub-rate"),
        ("node", "--upstream-retries"),
        ("node", "--access-ttl"),
        ("tracker", "--silent-after"),
        ("bench", "--pull-timeout"),
        ("bench", "--slow-upstream-mbit"),
    ],
)
def test_zero_still_means_what_the_help_says(command: str, flag: str) -> None:
    _load(command, [f"{flag}=0"])


def test_a_fraction_is_between_0_and_1() -> None:
    with pytest.raises(settings.ConfigError, match=r"^DI_CACHE_LOW_WATERMARK: must be at most 1,"):
        parse([], {"DI_CACHE_LOW_WATERMARK": "1.5"})
    assert parse(["--cache-low-watermark", "0.5"]).store.cache_low_watermark == 0.5


def test_every_default_is_within_its_own_bounds() -> None:
    for command in _config_types():
        _load(command, [])


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("node", "--listen", "abc"),
        ("node", "--listen", "127.0.0.1:99999"),
        ("node", "--metrics-listen", "abc"),
        ("node", "--peer-listen", "1.2.3:x"),
        ("node", "--tracker", "nohost"),
        ("node", "--registry", "foo"),
        ("node", "--registry", "x=ftp://y"),
        ("node", "--registry", "x.io=http://127.0.0.1:99999"),  # was taken, and failed later
        ("node", "--registry", "x.io=http://[zz"),
        ("node", "--log-level", "loud"),
        # The tracker refuses these at every join: the node retried forever, saying the
        # tracker was unreachable.
        ("node", "--zone", "a b"),
        ("node", "--node-id", "x" * 300),
        ("credential", "--node", "a b"),  # a credential no node could join with
        ("tracker", "--seeder", "x" * 300),  # a node id no node could have
        ("tracker", "--listen", "7070"),
        ("tracker", "--http-listen", "abc"),
        ("tracker", "--advertise", "abc"),
        ("tracker", "--log-level", "loud"),
        ("status", "--tracker", "a:1,b"),
        ("preheat", "--tracker", "abc"),
        ("doctor", "--tracker", "abc"),
        ("containerd-config", "--registry", "x=ftp://y"),
        ("bench", "--log-level", "verbose"),
    ],
)
def test_an_address_or_a_name_that_cannot_work_is_refused_with_its_flag(
    command: str, flag: str, value: str
) -> None:
    with pytest.raises(settings.ConfigError, match=f"^{flag}: "):
        _load(command, [f"{flag}={value}"])


def test_addresses_and_levels_as_written_are_kept() -> None:
    config = parse(
        ["--listen", "[::1]:8080", "--tracker", "a:1, b:2", "--log-level", "DEBUG"],
        {"DI_REGISTRY": "registry.local:5000=http://10.0.0.1:5000"},
    )
    assert config.listen == "[::1]:8080"
    assert config.cluster.tracker == "a:1, b:2"
    assert config.log_level == "debug"
    assert config.upstream.registry == ["registry.local:5000=http://10.0.0.1:5000"]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("cold-fetches = true", "cold-fetches"),  # was 1
        ("upstream-retries = 2.7", "upstream-retries"),  # was 2
        ("upstream-timeout = false", "upstream-timeout"),
    ],
)
def test_a_config_file_value_of_another_type_is_refused_not_converted(
    tmp_path: Path, line: str, key: str
) -> None:
    file = tmp_path / "node.toml"
    file.write_text(line + "\n")
    with pytest.raises(settings.ConfigError, match=f"^{file}: {key}: "):
        parse(["--config", str(file)])


def test_a_config_file_takes_numbers_as_numbers_or_as_text(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text(
        'cold-fetches = 4\nupstream-timeout = 2\nupstream-retries = "5"\nfsync = false\n'
    )
    config = parse(["--config", str(file)])
    assert (config.upstream.cold_fetches, config.upstream.upstream_timeout) == (4, 2.0)
    assert (config.upstream.upstream_retries, config.store.fsync) == (5, False)
