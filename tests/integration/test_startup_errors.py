"""A node or tracker that cannot start says why in one line, with the fix, and exits non-zero:
no traceback. An archive it cannot read is reported where a person looks (/readyz's body).

The tests run as root, which may write anything: the processes whose permissions matter run
under `tests.support.permissions.NO_DAC`, so a directory or archive owned by another uid is as
closed to them as it is to the container's uid 10001.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import disks, skopeo
from tests.support.certs import write_self_signed
from tests.support.images import LayerSpec, build_image
from tests.support.node import CHECKOUT, Node
from tests.support.permissions import NO_DAC, OTHER_UID, foreign
from tests.support.process import LOOPBACK, free_port, http_get

pytestmark = pytest.mark.integration


def cli(*args: str, wrapper: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`distributed-images ARGS` as a process of this checkout; it must exit by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    env["PYTHONPATH"] = str(CHECKOUT)
    argv = [*(wrapper or []), sys.executable, "-m", "distributed_images.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def node_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "node",
        "--listen",
        f"{LOOPBACK}:{free_port()}",
        "--peer-listen",
        f"{LOOPBACK}:{free_port()}",
        "--data-dir",
        str(tmp_path / "data"),
        "--auth-file",
        str(tmp_path / "no-auth.json"),
        *extra,
    ]


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The single line a failed start prints; fails unless that is all it printed."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith(f"distributed-images {command}: "), lines[0]
    return lines[0]


@pytest.fixture
def held_port() -> Iterator[str]:
    """A loopback address another process listens on."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        s.listen()
        yield f"{LOOPBACK}:{s.getsockname()[1]}"


def test_a_node_whose_port_is_in_use_says_so_and_names_the_flag(
    tmp_path: Path, held_port: str
) -> None:
    result = cli(*node_args(tmp_path), "--listen", held_port)
    line = one_line_error(result, "node")
    assert f"cannot listen on {held_port}: the port is in use" in line
    assert "--listen" in line


@pytest.mark.parametrize("flag", ["--listen", "--http-listen"])
def test_a_tracker_whose_port_is_in_use_says_so_and_names_the_flag(
    held_port: str, flag: str
) -> None:
    ports = {"--listen": f"{LOOPBACK}:{free_port()}", "--http-listen": f"{LOOPBACK}:{free_port()}"}
    ports[flag] = held_port
    result = cli("tracker", *(word for pair in ports.items() for word in pair))
    line = one_line_error(result, "tracker")
    assert f"cannot listen on {held_port}: the port is in use" in line
    assert line.endswith(f"with {flag}")


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        # Started, this node would make every cold pull wait forever for a fetch slot.
        ("--cold-fetches", "0", "must be at least 1, got 0"),
        ("--cache-max-bytes", "inf", "not a size: 'inf'"),
        ("--upstream-timeout", "nan", "must be a finite number, got nan"),
        # These three used to end the node with a traceback.
        ("--metrics-listen", "abc", "expected HOST:PORT, got 'abc'"),
        ("--tracker", "nohost", "expected HOST:PORT, got 'nohost'"),
        ("--registry", "x=ftp://y", "expected NS=URL with an http(s) URL, got 'x=ftp://y'"),
    ],
)
def test_a_value_out_of_range_is_refused_with_the_flag_named(
    tmp_path: Path, flag: str, value: str, reason: str
) -> None:
    result = cli(*node_args(tmp_path), flag, value)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"distributed-images: error: {flag}: {reason}"


@pytest.mark.parametrize("command", ["node", "tracker", "status"])
@pytest.mark.parametrize("problem", ["missing", "no_certificate"])
def test_a_ca_file_that_is_missing_or_holds_no_certificate_ends_the_start(
    tmp_path: Path, command: str, problem: str
) -> None:
    """The node used to fail once it dialed the tracker: a traceback for a missing file, and
    gRPC's own lines about its handshake, again and again, for a file with no certificate."""
    ca = tmp_path / "ca.pem"
    if problem == "no_certificate":
        ca.write_text("no certificate here\n")
    expected = (
        f"cannot read {ca}: No such file or directory"
        if problem == "missing"
        else f"{ca} holds no PEM certificate"
    )
    if command == "node":
        args = [*node_args(tmp_path), "--tracker", f"{LOOPBACK}:1", "--tracker-tls-ca", str(ca)]
        line = one_line_error(cli(*args), "node")
        assert line.endswith(f"--tracker-tls-ca: {expected}")
    elif command == "tracker":
        ports = ["--listen", f"{LOOPBACK}:{free_port()}", "--http-listen", f"{LOOPBACK}:0"]
        store = ["--store", f"rediss://{LOOPBACK}:1/0", "--store-tls-ca", str(ca)]
        line = one_line_error(cli("tracker", *ports, *store), "tracker")
        assert line.endswith(f"--store-tls-ca: {expected}")
    else:
        result = cli("status", "--tracker", f"{LOOPBACK}:1", "--tls-ca", str(ca))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().endswith(f"--tls-ca: {expected}"), result.stderr


@pytest.mark.parametrize("problem", ["missing", "not_pem", "another_key"])
def test_a_tracker_whose_certificate_or_key_cannot_serve_says_which(
    tmp_path: Path, problem: str
) -> None:
    """These used to end the start with a traceback, or with "cannot listen" for a bad file."""
    cert, key = write_self_signed(tmp_path, "tracker")
    _, other_key = write_self_signed(tmp_path, "other")
    if problem == "missing":
        key = tmp_path / "gone.key"
        expected = f"cannot read {key}: No such file or directory"
    elif problem == "not_pem":
        cert = key = tmp_path / "not.pem"
        key.write_text("not a certificate\n")
        expected = f"{cert} and {key} are not a PEM certificate and its key"
    else:
        key = other_key
        expected = f"{key} is not the private key of {cert}"
    ports = ["--listen", f"{LOOPBACK}:{free_port()}", "--http-listen", f"{LOOPBACK}:{free_port()}"]
    result = cli("tracker", *ports, "--tls-cert", str(cert), "--tls-key", str(key))
    line = one_line_error(result, "tracker")
    assert line == f"distributed-images tracker: --tls-cert, --tls-key: {expected}"


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (
            ["--node-ttl", "3"],
            "--node-ttl (3 s) must be longer than --heartbeat-interval (5 s)",
        ),
        (["--tls-cert", "/etc/hostname"], "--tls-cert and --tls-key go together"),
    ],
)
def test_a_tracker_given_flags_that_do_not_go_together_says_which(
    flags: list[str], reason: str
) -> None:
    ports = ["--listen", f"{LOOPBACK}:{free_port()}", "--http-listen", f"{LOOPBACK}:{free_port()}"]
    line = one_line_error(cli("tracker", *ports, *flags), "tracker")
    assert reason in line


def test_a_data_dir_the_node_may_not_write_names_its_uid_and_the_chown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    foreign(data, 0o755)
    result = cli(*node_args(tmp_path), wrapper=NO_DAC)
    line = one_line_error(result, "node")
    assert f"the data dir {data} is not writable by uid 0" in line
    assert f"owner uid {OTHER_UID}, mode 0755" in line
    assert f"`chown -R 0:0 {data}`" in line


def test_a_data_dir_with_a_foreign_store_inside_is_reported_the_same_way(tmp_path: Path) -> None:
    """The directory is writable, but the store in it was made by another user (a cache copied
    in as root, a volume reused by another image)."""
    data = tmp_path / "data"
    (data / "blobs").mkdir(parents=True)
    foreign(data / "blobs", 0o755)
    result = cli(*node_args(tmp_path), wrapper=NO_DAC)
    line = one_line_error(result, "node")
    assert f"the data dir {data} is not writable by uid 0" in line
    assert f"`chown -R 0:0 {data}`" in line


def test_a_data_dir_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    """Not a chown: SQLite failing to create the store's metadata there says SQLITE_FULL."""
    with disks.tmpfs(tmp_path / "disk", 64 << 10) as disk:
        disks.fill(disk / "filler")
        result = cli(*node_args(tmp_path), "--data-dir", str(disk / "data"))
    line = one_line_error(result, "node")
    assert f"the data dir {disk / 'data'} is on a full disk" in line
    assert "chown" not in line
    assert line.endswith("or choose another directory with --data-dir")


def test_an_images_dir_the_node_may_not_read_names_its_uid_and_the_chmod(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    foreign(images, 0o700)
    result = cli(*node_args(tmp_path, "--images-dir", str(images)), wrapper=NO_DAC)
    line = one_line_error(result, "node")
    assert f"the images dir {images} is not readable by uid 0" in line
    assert f"owner uid {OTHER_UID}, mode 0700" in line
    assert f"`chmod a+rx {images}`" in line


def test_an_archive_the_node_cannot_read_is_in_the_readyz_body_with_the_fix(
    tmp_path: Path,
) -> None:
    """`docker save -o` writes mode 0600 for its user: the node, another user, cannot read it.
    It still serves (a broken archive never stops a node) but says so where a person looks."""
    images = tmp_path / "images"
    images.mkdir()
    image = build_image(tmp_path / "src", "1", [LayerSpec(20_000)], seed="unreadable")
    archive = images / "saved.tar"
    skopeo.save_archive(image, archive, "x:1")
    foreign(archive, 0o600)
    node = Node(
        tmp_path / "node",
        {},
        "docker.io",
        extra_args=["--images-dir", str(images)],
        wrapper=NO_DAC,
    )
    try:
        node.start()
        body = http_get(f"{node.url}/readyz").decode()
    finally:
        node.stop()
    lines = body.splitlines()
    assert lines[0] == "ready"
    assert len(lines) == 2, body
    assert lines[1].startswith("archive skipped: saved.tar: cannot read ")
    assert f"owner uid {OTHER_UID}, mode 0600; this node runs as uid 0" in lines[1]
    assert f"fix: make it readable by uid 0: `chmod a+r {archive}`" in lines[1]


def test_setpriv_takes_away_roots_power_over_permissions(tmp_path: Path) -> None:
    """The premise of the tests above: without it they would test nothing."""
    closed = tmp_path / "closed"
    closed.mkdir()
    foreign(closed, 0o700)
    probe = subprocess.run(
        [*NO_DAC, "ls", str(closed)], capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert shutil.which("setpriv")
