"""The container image's HEALTHCHECK: is the `distributed-images` command this container runs
healthy? `python -m distributed_images.healthcheck [PID]`, exit 0 when it is.

One image runs a node (`GET /healthz` on its `--listen` port, 8080) or a tracker (`GET /healthz`
on its `--http-listen` port, 7071), so the check reads which command the container's main
process (PID 1, or PID) runs, with its arguments and its environment, through the command's own
configuration code: a port moved by a flag, a `DI_*` variable or a config file is the port
asked. Any other command has nothing to check and passes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from distributed_images import settings
from distributed_images.cli import COMMANDS
from tracker import address

TIMEOUT = 4.0
# The commands that serve /healthz: the module of their Config, and the field naming the port.
SERVERS = {"node": ("node.config", "listen"), "tracker": ("tracker.app", "http_listen")}


def served_command(pid: int) -> tuple[str, list[str], dict[str, str]] | None:
    """(command, its arguments, its environment) of the `distributed-images` process `pid`."""
    proc = Path("/proc") / str(pid)
    argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
    words = [
        w for w in argv[1:] if not w.endswith(("distributed-images", "distributed_images.cli"))
    ]
    words = [w for w in words if w != "-m"]
    command = next((w for w in words if not w.startswith("-")), None)
    if command not in COMMANDS:
        return None
    try:
        raw = (proc / "environ").read_bytes().split(b"\0")
        environ = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
    except OSError:
        environ = {}
    return command, words[words.index(command) + 1 :], environ


def health_url(command: str, args: list[str], environ: dict[str, str]) -> str | None:
    """Where the command answers /healthz, as its own flags, environment and file say."""
    if command not in SERVERS:
        return None
    module_name, field = SERVERS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(add_help=False)
    settings.add_arguments(parser, module.Config)
    known, _ = parser.parse_known_args(args)
    listen = getattr(settings.load(module.Config, known, environ), field)
    if not listen:
        return None
    host, port = address.split(listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"http://{address.join(host, port)}/healthz"


def check(url: str) -> str | None:
    """None when `url` answers 200, else what went wrong."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as e:
        e.close()
        return f"{url} answered {e.code}"
    except OSError as e:  # TimeoutError included
        return f"{url}: {e}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    pid = int(args[0]) if args else 1
    try:
        served = served_command(pid)
    except OSError as e:
        print(f"unhealthy: cannot read process {pid}: {e}")
        return 1
    if served is None:
        print(f"healthy: process {pid} runs no server of distributed-images")
        return 0
    command, command_args, environ = served
    try:
        url = health_url(command, command_args, environ)
    except (settings.ConfigError, ValueError) as e:
        print(f"unhealthy: the {command}'s settings do not parse: {e}")
        return 1
    if url is None:
        print(f"healthy: the {command} serves no HTTP port to ask")
        return 0
    problem = check(url)
    print(f"unhealthy: {problem}" if problem else f"healthy: {url} answered 200")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
