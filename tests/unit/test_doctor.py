"""`doctor` over files in a temp dir and fixed probe answers: each way containerd can end up
pulling around the node is reported as a failure that names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import doctor, hostsconfig
from node.doctor import Config, Finding, Level, StaticProbes

NODE = "http://127.0.0.1:8080"
TRACKER = "127.0.0.1:7070"
LIVE_NODE = {f"{NODE}/v2/": 200, f"{NODE}/readyz": 200}


def containerd_config(tmp_path: Path, registry_table: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n' + registry_table
    )
    return path


@pytest.fixture
def healthy(tmp_path: Path) -> Config:
    """A host set up as the chart sets it up: config_path, hosts.toml files, a live node."""
    hosts_dir = tmp_path / "certs.d"
    for ns in ("docker.io", "127.0.0.1:5000"):
        target = hostsconfig.parse_target(ns)
        hostsconfig.write(hosts_dir, target, NODE, "200ms")
    path = containerd_config(tmp_path, f'config_path = "{hosts_dir}"\n')
    return Config(containerd_config=path, node=NODE, tracker=TRACKER)


def diagnose(config: Config, http: dict[str, int] | None = None) -> list[Finding]:
    probes = StaticProbes(http=LIVE_NODE if http is None else http, grpc={TRACKER: "SERVING"})
    return list(doctor.diagnose(config, probes))


def failures(findings: list[Finding]) -> list[str]:
    return [f.render() for f in findings if f.level is Level.FAIL]


def test_a_host_wired_like_the_chart_passes(
    healthy: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = diagnose(healthy)
    assert failures(findings) == []
    assert {f.level for f in findings} == {Level.OK}
    subjects = " ".join(f.subject for f in findings)
    assert "docker.io" in subjects and "127.0.0.1:5000" in subjects


def test_missing_config_path_is_a_failure_with_the_setting_to_add(
    healthy: Config, tmp_path: Path
) -> None:
    healthy.containerd_config = containerd_config(tmp_path, "")
    healthy.hosts_dir = tmp_path / "certs.d"
    [failure] = failures(diagnose(healthy))
    assert "config_path is not set" in failure
    assert 'config_path = "' in failure and "restart containerd" in failure


def test_a_missing_containerd_config_is_a_failure(healthy: Config, tmp_path: Path) -> None:
    healthy.containerd_config = tmp_path / "absent.toml"
    healthy.hosts_dir = tmp_path / "certs.d"
    [failure] = failures(diagnose(healthy))
    assert "not found" in failure


def test_containerd_2_reads_certs_d_without_config_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("version = 3\n")
    # The containerd check alone: the whole diagnosis would look into the real /etc/containerd.
    findings = list(doctor._check_containerd(path, None))
    assert [f.level for f in findings] == [Level.OK]
    assert "config_path = /etc/containerd/certs.d:/etc/docker/certs.d" in findings[0].message


def test_hosts_files_outside_config_path_are_never_read(healthy: Config, tmp_path: Path) -> None:
    healthy.containerd_config = containerd_config(tmp_path, 'config_path = "/elsewhere"\n')
    healthy.hosts_dir = tmp_path / "certs.d"
    failure = failures(diagnose(healthy))[0]
    assert "never reads" in failure and "/elsewhere" in failure


def test_deprecated_mirrors_beside_config_path_is_a_failure(
    healthy: Config, tmp_path: Path
) -> None:
    table = (
        f'config_path = "{tmp_path / "certs.d"}"\n'
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
        'endpoint = ["http://127.0.0.1:8080"]\n'
    )
    healthy.containerd_config = containerd_config(tmp_path, table)
    [failure] = failures(diagnose(healthy))
    assert "registry.mirrors" in failure


def test_a_registry_without_hosts_toml_names_the_command_that_writes_it(healthy: Config) -> None:
    healthy.registry = ["docker.io", "ghcr.io=https://ghcr.io"]
    [failure] = failures(diagnose(healthy))
    assert "hosts.toml for ghcr.io" in failure and "bypass the node" in failure
    assert "containerd-config" in failure and "--registry ghcr.io" in failure


def test_the_catch_all_file_covers_any_registry(tmp_path: Path) -> None:
    hosts_dir = tmp_path / "certs.d"
    hostsconfig.write(hosts_dir, hostsconfig.parse_target("_default"), NODE, "200ms")
    path = containerd_config(tmp_path, f'config_path = "{hosts_dir}"\n')
    config = Config(containerd_config=path, node=NODE, registry=["quay.io"])
    assert failures(diagnose(config)) == []


def test_no_hosts_toml_at_all_is_a_failure(healthy: Config, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    healthy.containerd_config = containerd_config(tmp_path, f'config_path = "{empty}"\n')
    [failure] = failures(diagnose(healthy))
    assert "none found" in failure


def test_a_node_that_is_down_fails_both_the_file_and_the_node_check(healthy: Config) -> None:
    found = failures(diagnose(healthy, http={}))
    assert len(found) == 3  # two hosts.toml files and the node itself
    assert all("does not answer" in f for f in found[:2])
    assert "not answering" in found[2]


def test_a_node_that_is_up_but_not_ready_is_a_failure(healthy: Config) -> None:
    http = {f"{NODE}/v2/": 200, f"{NODE}/readyz": 503}
    [failure] = failures(diagnose(healthy, http=http))
    assert "not ready" in failure and "503" in failure


def test_a_file_pointing_at_another_live_address_is_a_warning(healthy: Config) -> None:
    healthy.node = "http://127.0.0.2:8080"
    http = LIVE_NODE | {"http://127.0.0.2:8080/v2/": 200, "http://127.0.0.2:8080/readyz": 200}
    findings = diagnose(healthy, http=http)
    assert failures(findings) == []
    assert any(f.level is Level.WARN and "not --node" in f.message for f in findings)


@pytest.mark.parametrize(
    ("host_table", "expected"),
    [
        ('capabilities = ["pull"]\ndial_timeout = "200ms"', "may not resolve"),
        ('capabilities = ["pull", "resolve"]', "no short dial_timeout"),
        ('capabilities = ["pull", "resolve"]\ndial_timeout = "30s"', "no short dial_timeout"),
    ],
)
def test_settings_that_slow_or_narrow_the_mirror_are_warnings(
    healthy: Config, host_table: str, expected: str
) -> None:
    path = healthy.containerd_config.parent / "certs.d" / "docker.io" / "hosts.toml"
    path.write_text(f'server = "https://registry-1.docker.io"\n[host."{NODE}"]\n{host_table}\n')
    findings = diagnose(healthy)
    assert failures(findings) == []
    assert any(f.level is Level.WARN and expected in f.message for f in findings)


def test_a_host_that_may_not_pull_is_never_asked(healthy: Config) -> None:
    path = healthy.containerd_config.parent / "certs.d" / "docker.io" / "hosts.toml"
    path.write_text(f'[host."{NODE}"]\ncapabilities = ["resolve"]\n')
    [failure] = failures(diagnose(healthy))
    assert "no [host] that may pull" in failure


@pytest.mark.parametrize("content", [b"[host.\n", b"\xaa\xff not UTF-8\n"])
def test_a_hosts_file_that_does_not_parse_is_a_failure(healthy: Config, content: bytes) -> None:
    path = healthy.containerd_config.parent / "certs.d" / "docker.io" / "hosts.toml"
    path.write_bytes(content)  # bytes that are not UTF-8 ended doctor with a traceback
    [failure] = failures(diagnose(healthy))
    assert "unreadable" in failure


def test_a_containerd_config_that_is_not_utf8_is_a_failure(healthy: Config) -> None:
    healthy.containerd_config.write_bytes(b"\xaa\xff")
    assert any("unreadable" in failure for failure in failures(diagnose(healthy)))


def test_hub_files_under_the_api_host_name_are_flagged(healthy: Config) -> None:
    certs = healthy.containerd_config.parent / "certs.d"
    (certs / "docker.io" / "hosts.toml").rename(certs / "docker.io" / "x")
    hostsconfig.write(certs, hostsconfig.parse_target("registry-1.docker.io"), NODE, "200ms")
    findings = diagnose(healthy)
    assert any("Docker Hub images up under docker.io" in f.message for f in findings)


@pytest.mark.parametrize("status", ["NOT_SERVING", "UNAVAILABLE", "UNIMPLEMENTED"])
def test_a_tracker_that_is_not_serving_is_a_failure(healthy: Config, status: str) -> None:
    probes = StaticProbes(http=LIVE_NODE, grpc={TRACKER: status})
    [failure] = failures(list(doctor.diagnose(healthy, probes)))
    assert f"tracker {TRACKER}" in failure and status in failure


def test_main_exits_non_zero_and_prints_the_fix(
    healthy: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy.node = "http://127.0.0.1:1"  # nothing listens on port 1
    healthy.tracker = None
    healthy.timeout = 0.5
    assert doctor.main(healthy) == 1
    out = capsys.readouterr().out
    assert "FAIL  node http://127.0.0.1:1" in out and "fix:" in out


def test_a_file_whose_server_is_the_mirror_has_no_fallback(healthy: Config) -> None:
    path = healthy.containerd_config.parent / "certs.d" / "docker.io" / "hosts.toml"
    path.write_text(f'server = "{NODE}"\n[host."{NODE}"]\ndial_timeout = "200ms"\n')
    findings = diagnose(healthy)
    assert failures(findings) == []
    assert any(f.level is Level.WARN and "no fallback" in f.message for f in findings)


def test_a_dead_first_host_is_a_warning_when_a_later_one_answers(healthy: Config) -> None:
    path = healthy.containerd_config.parent / "certs.d" / "docker.io" / "hosts.toml"
    dead = "http://127.0.0.1:1"
    path.write_text(
        f'[host."{dead}"]\ndial_timeout = "200ms"\n[host."{NODE}"]\ndial_timeout = "200ms"\n'
    )
    findings = diagnose(healthy)
    assert failures(findings) == []
    assert any(f.level is Level.WARN and f"tries {dead} first" in f.message for f in findings)


def test_an_archive_the_node_skipped_is_a_failure_with_its_reason_and_fix(
    healthy: Config,
) -> None:
    skipped = {"name": "saved.tar", "reason": "cannot read /app/images/saved.tar: permission "
               "denied", "fix": "make it readable by uid 10001: `chmod a+r ...`"}  # fmt: skip
    status = {"ready": True, "why": "serving", "archives": {"skipped": [skipped]}}
    probes = StaticProbes(
        http=LIVE_NODE, grpc={TRACKER: "SERVING"}, json={f"{NODE}/status": status}
    )
    [failure] = failures(list(doctor.diagnose(healthy, probes)))
    assert f"node {NODE}: archive saved.tar: skipped" in failure
    assert "permission denied" in failure and "fix: make it readable by uid 10001" in failure


def test_a_node_that_is_not_ready_says_why(healthy: Config) -> None:
    why = "importing the archives found in /app/images at start: 2 left"
    probes = StaticProbes(
        http={f"{NODE}/v2/": 200, f"{NODE}/readyz": 503},
        grpc={TRACKER: "SERVING"},
        json={f"{NODE}/status": {"ready": False, "why": why}},
    )
    [failure] = failures(list(doctor.diagnose(healthy, probes)))
    assert why in failure
