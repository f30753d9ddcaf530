"""`containerd-config`: the hosts.toml it writes, its backups, and an idempotent `--remove`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from distributed_images import cli
from node import hostsconfig
from node.hostsconfig import BACKUP_NAME, MARKER, RegistryTarget, parse_target

MIRROR = "http://127.0.0.1:8080"
FOREIGN = 'server = "https://registry-1.docker.io"\n[host."https://mirror.example"]\n'


def run(hosts_dir: Path, *args: str) -> int:
    return cli.main(["containerd-config", "--hosts-dir", str(hosts_dir), *args])


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_docker_hub_falls_back_to_its_api_host_and_the_node_may_pull_and_resolve(
    tmp_path: Path,
) -> None:
    assert run(tmp_path, "--registry", "docker.io", "--mirror", MIRROR) == 0
    hosts = tomllib.loads((tmp_path / "docker.io" / "hosts.toml").read_text())
    assert hosts["server"] == "https://registry-1.docker.io"
    assert hosts["host"] == {MIRROR: {"capabilities": ["pull", "resolve"], "dial_timeout": "200ms"}}


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("ghcr.io", RegistryTarget("ghcr.io", "https://ghcr.io")),
        ("127.0.0.1:5000", RegistryTarget("127.0.0.1:5000", "http://127.0.0.1:5000")),
        ("localhost:5000", RegistryTarget("localhost:5000", "http://localhost:5000")),
        ("quay.io=https://quay.example/", RegistryTarget("quay.io", "https://quay.example")),
        ("_default", RegistryTarget("_default", None)),
    ],
)
def test_a_registry_is_reached_at_its_own_url_unless_one_is_given(
    text: str, target: RegistryTarget
) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(
    "text", ["../etc", "a/b", "ghcr.io=ftp://x", 'ghcr.io=https://a"b', "_default=https://x", ""]
)
def test_a_malformed_registry_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_the_catch_all_directory_has_no_server_of_its_own(tmp_path: Path) -> None:
    assert run(tmp_path, "--registry", "_default", "--dial-timeout", "1s") == 0
    hosts = tomllib.loads((tmp_path / "_default" / "hosts.toml").read_text())
    assert "server" not in hosts
    assert hosts["host"][MIRROR]["dial_timeout"] == "1s"


def test_nothing_is_written_without_a_registry_or_with_a_bad_mirror(tmp_path: Path) -> None:
    assert run(tmp_path) == 2
    assert run(tmp_path, "--registry", "docker.io", "--mirror", "127.0.0.1:8080") == 2
    assert run(tmp_path, "--registry", "docker.io", "--mirror", "http://h:1/v2") == 2
    assert run(tmp_path, "--registry", "docker.io", "--mirror", 'http://h"x') == 2
    assert run(tmp_path, "--registry", "docker.io", "--mirror", "http://h:99999") == 2
    assert run(tmp_path, "--registry", "docker.io", "--dial-timeout", "200") == 2
    assert snapshot(tmp_path) == {}


def test_registries_come_from_the_environment_like_the_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DI_REGISTRY", "docker.io ghcr.io=https://ghcr.io")
    monkeypatch.setenv("DI_MIRROR", "http://127.0.0.2:8080")
    assert run(tmp_path) == 0
    assert sorted(snapshot(tmp_path)) == ["docker.io/hosts.toml", "ghcr.io/hosts.toml"]
    assert "http://127.0.0.2:8080" in (tmp_path / "ghcr.io" / "hosts.toml").read_text()


def test_a_foreign_file_is_backed_up_and_restored_byte_for_byte(tmp_path: Path) -> None:
    original = tmp_path / "docker.io" / "hosts.toml"
    original.parent.mkdir()
    original.write_text(FOREIGN)
    before = snapshot(tmp_path)

    assert run(tmp_path, "--registry", "docker.io") == 0
    assert original.read_text().startswith(MARKER)
    assert (original.parent / BACKUP_NAME).read_text() == FOREIGN

    assert run(tmp_path, "--registry", "docker.io", "--remove") == 0
    assert snapshot(tmp_path) == before


def test_writing_twice_keeps_the_original_backup(tmp_path: Path) -> None:
    original = tmp_path / "docker.io" / "hosts.toml"
    original.parent.mkdir()
    original.write_text(FOREIGN)
    assert run(tmp_path, "--registry", "docker.io", "--mirror", "http://127.0.0.1:1") == 0
    assert run(tmp_path, "--registry", "docker.io", "--mirror", "http://127.0.0.1:2") == 0
    assert "127.0.0.1:2" in original.read_text()
    assert (original.parent / BACKUP_NAME).read_text() == FOREIGN


def test_remove_is_idempotent_and_leaves_no_trace_where_nothing_was(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "hosts.toml").write_text(FOREIGN)
    before = snapshot(tmp_path)
    assert run(tmp_path, "--registry", "docker.io", "--registry", "ghcr.io") == 0
    for _ in range(2):
        assert run(tmp_path, "--registry", "docker.io", "--registry", "ghcr.io", "--remove") == 0
        assert snapshot(tmp_path) == before
    assert not (tmp_path / "docker.io").exists()


def test_remove_leaves_a_file_someone_else_wrote_after_us(tmp_path: Path) -> None:
    assert run(tmp_path, "--registry", "docker.io") == 0
    (tmp_path / "docker.io" / "hosts.toml").write_text(FOREIGN)
    assert run(tmp_path, "--registry", "docker.io", "--remove") == 0
    assert (tmp_path / "docker.io" / "hosts.toml").read_text() == FOREIGN


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    for _ in range(3):
        hostsconfig.write(tmp_path, parse_target("docker.io"), MIRROR, "200ms")
    assert sorted(p.name for p in (tmp_path / "docker.io").iterdir()) == ["hosts.toml"]
