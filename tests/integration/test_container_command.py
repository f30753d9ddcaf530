"""The image's command, run as a plain process: no Docker engine is needed to know that
`docker run distributed_images_image` starts a working node and that its health check works,
for the node and for the tracker the same image runs. (tests/netns/test_container_image.py
builds and runs the image itself with podman.)

The Dockerfile's final stage is parsed for ENTRYPOINT, CMD, ENV and HEALTHCHECK; the command runs
with that environment, where only paths and addresses are moved to a temp dir and loopback.
The compose file's services are checked against the flags the commands really have.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from distributed_images import cli
from tests.support.process import Daemon, free_port, http_status, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
# Where the image keeps state, and what the test moves it to.
CONTAINER_PATHS = {"DI_DATA_DIR": "data", "DI_IMAGES_DIR": "images"}

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, argument = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), argument.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def last(stage: list[Instruction], keyword: str) -> str:
    found = [ins.argument for ins in stage if ins.keyword == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]


def exec_form(argument: str) -> list[str]:
    argv = json.loads(argument)  # the shell form would need /bin/sh, which differs outside
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argument
    return argv


def image_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(ins.argument))  # type: ignore[misc]
    return env


@pytest.fixture(scope="module")
def stage() -> list[Instruction]:
    return final_stage(parse_dockerfile(DOCKERFILE.read_text()))


@dataclass
class Container:
    """The image's command as a process: its argv, environment and loopback address."""

    daemon: Daemon
    env: dict[str, str]
    url: str


@pytest.fixture
def container(
    stage: list[Instruction], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Container]:
    """The image's command, or (param "tracker") `docker run distributed_images_image tracker`."""
    tracker = getattr(request, "param", "node") == "tracker"
    command = ["tracker"] if tracker else exec_form(last(stage, "CMD"))
    argv = exec_form(last(stage, "ENTRYPOINT")) + command
    assert shutil.which(argv[0]), f"{argv[0]} is not installed (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
    env |= image_env(stage)
    # The code under test is this checkout's, whatever copy of the package pip installed.
    env["PYTHONPATH"] = str(ROOT)
    for name, directory in CONTAINER_PATHS.items():
        (tmp_path / directory).mkdir()
        env[name] = str(tmp_path / directory)
    port = free_port()
    env |= {
        "DI_LISTEN": f"127.0.0.1:{port}",
        "DI_HTTP_LISTEN": f"127.0.0.1:{port}",  # the tracker's HTTP port; gRPC moves off it
        "DI_PEER_LISTEN": f"127.0.0.1:{free_port()}",
        "DI_ADVERTISE_HOST": "127.0.0.1",
        "DI_AUTH_FILE": str(tmp_path / "no-auth.json"),
        "HOME": str(tmp_path),
    }
    if tracker:
        env["DI_LISTEN"] = f"127.0.0.1:{free_port()}"
    daemon = Daemon("container", argv, tmp_path / "logs", env=env, cwd=tmp_path)
    daemon.start()
    try:
        yield Container(daemon, env, f"http://127.0.0.1:{port}")
    finally:
        code = daemon.stop()
        print(daemon.log_tail())
    assert code == 0, f"the container's command exited with {code} on SIGTERM"


def test_the_image_is_a_slim_python_that_runs_as_a_user_with_a_cache_volume(
    stage: list[Instruction],
) -> None:
    assert last(stage, "FROM") == "python:3.11-slim"
    user = last(stage, "USER").split(":")[0]
    assert user not in ("", "0", "root")
    env = image_env(stage)
    assert env["DI_IMAGES_DIR"] == "/app/images"
    assert env["DI_DATA_DIR"] in exec_form(last(stage, "VOLUME"))
    assert {"8080", "6881"} <= set(last(stage, "EXPOSE").split())
    assert " CMD " in last(stage, "HEALTHCHECK")


def test_every_package_is_copied_into_the_build_and_none_is_ignored() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(fnmatch(p.name, pat) for pat in patterns)
    }
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    copied = {
        source
        for ins in instructions
        if ins.keyword == "COPY" and "--from" not in ins.argument
        for source in ins.argument.split()[:-1]
    }
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not any(fnmatch(source, pattern) for pattern in ignored), f"{source} is ignored"


def wait_for(container: Container, path: str) -> None:
    def answers() -> bool:
        if not container.daemon.running:
            raise AssertionError(container.daemon.describe_exit())
        return http_status(f"{container.url}{path}", timeout=1.0) == 200

    wait_until(answers, 30.0, f"{path} 200", on_timeout=container.daemon.log_tail)


def test_the_container_command_serves_the_registry_api(container: Container) -> None:
    wait_for(container, "/healthz")
    assert http_status(f"{container.url}/v2/") == 200
    wait_for(container, "/readyz")


@pytest.mark.parametrize("container", ["node", "tracker"], indirect=True)
def test_the_health_check_passes_on_a_live_server_and_fails_on_a_frozen_one(
    stage: list[Instruction], container: Container
) -> None:
    """In a container the check reads the command of PID 1; here it is given the command's."""
    argument = last(stage, "HEALTHCHECK")
    healthcheck = [*exec_form(argument.partition(" CMD ")[2]), str(container.daemon.pid)]
    wait_for(container, "/healthz")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            healthcheck, env=container.env, capture_output=True, text=True, timeout=30, check=False
        )

    passed = check()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith(f"healthy: {container.url}/healthz answered 200")
    container.daemon.signal(signal.SIGSTOP)  # alive, and answering nothing
    try:
        failed = check()
    finally:
        container.daemon.signal(signal.SIGCONT)
    assert failed.returncode == 1 and failed.stdout.startswith("unhealthy: "), failed.stdout


def flags_of(command: str) -> set[str]:
    """The long flags `distributed-images COMMAND` accepts, from its real parser."""
    parser, _ = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert command in subparsers.choices, f"no `distributed-images {command}`"
    sub = subparsers.choices[command]
    return {opt for action in sub._actions for opt in action.option_strings if opt[:2] == "--"}


def env_names(command: str) -> set[str]:
    return {"DI_" + flag[2:].replace("-", "_").upper() for flag in flags_of(command)}


def test_the_compose_demo_has_a_registry_a_tracker_and_three_nodes() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"registry", "tracker", "node1", "node2", "node3"}
    ports = {name: [p.split(":")[-1] for p in s.get("ports", [])] for name, s in services.items()}
    assert all(ports[f"node{i}"] == ["8080"] for i in (1, 2, 3))
    node_env = env_names("node")
    for name in ("node1", "node2", "node3"):
        env = services[name]["environment"]
        unknown = {k for k in env if k.startswith("DI_")} - node_env
        assert not unknown, f"{name} sets variables the node does not read: {unknown}"
        assert env["DI_TRACKER"] == "tracker:7070"
        assert services[name]["image"] == services["tracker"]["image"] == "distributed_images_image"
    assert "/app/images" in " ".join(services["node1"]["volumes"])


def test_the_compose_tracker_command_uses_real_flags() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    command = services["tracker"]["command"]
    assert command[0] == "tracker"
    used = {word.split("=")[0] for word in command[1:] if word.startswith("--")}
    assert used <= flags_of("tracker")
