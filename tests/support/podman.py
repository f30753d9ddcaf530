"""podman as a pulling client, configured entirely under a temporary directory.

`CONTAINERS_STORAGE_CONF`, `CONTAINERS_REGISTRIES_CONF` and `CONTAINERS_CONF` point at files
written here (vfs driver, storage in the temp dir), so /etc and /var/lib/containers are never
touched. Images are named `myreg.internal/...`: registries.conf maps that prefix to the real
registry (`location`) and, optionally, to a node as its mirror; the prefix is never looked up in
DNS because every name pulled has it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from base64 import b64encode
from pathlib import Path

from tests.support.process import run

PREFIX = "myreg.internal"


class Podman:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        # podman refuses a runroot longer than 50 characters: it gets a short directory.
        self._short = Path(tempfile.mkdtemp(prefix="di-podman-"))
        self.runroot = self._short / "run"
        workdir.mkdir(parents=True, exist_ok=True)
        self._storage_conf = workdir / "storage.conf"
        self._storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        self._containers_conf = workdir / "containers.conf"
        (workdir / "net").mkdir(exist_ok=True)
        self._containers_conf.write_text(f'[network]\nnetwork_config_dir = "{workdir / "net"}"\n')
        self._registries_conf = workdir / "registries.conf"
        # An empty auth file: podman never picks up credentials of the machine it runs on.
        self._auth_file = workdir / "auth.json"
        self._auth_file.write_text('{"auths": {}}')
        (self._short / "xdg").mkdir(mode=0o700)
        self.configure(location="127.0.0.1:9", mirror=None)

    def configure(self, location: str, mirror: str | None) -> None:
        """Point `myreg.internal` at `location` (host:port), with `mirror` (host:port) tried
        first; both plain HTTP."""
        text = (
            "unqualified-search-registries = []\n"
            f'[[registry]]\nprefix = "{PREFIX}"\nlocation = "{location}"\ninsecure = true\n'
        )
        if mirror:
            text += f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n'
        self._registries_conf.write_text(text)

    def allow_plain_http(self, host: str) -> None:
        """Let images be pulled from `host` itself (not as a mirror) over plain HTTP."""
        block = f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
        self._registries_conf.write_text(self._registries_conf.read_text() + block)

    def log_in(self, host: str, user: str, password: str) -> None:
        """An auth.json entry for `host`, as `podman login host` writes it."""
        auths = json.loads(self._auth_file.read_text())["auths"]
        auths[host] = {"auth": b64encode(f"{user}:{password}".encode()).decode()}
        self._auth_file.write_text(json.dumps({"auths": auths}))

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(self._storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self._registries_conf),
            "CONTAINERS_CONF": str(self._containers_conf),
            "REGISTRY_AUTH_FILE": str(self._auth_file),
            "XDG_RUNTIME_DIR": str(self._short / "xdg"),
        }

    def _podman(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            *args,
        ]

    def pull(
        self,
        name: str,
        timeout: float = 180.0,
        *,
        registry: str = PREFIX,
        creds: str | None = None,
    ) -> None:
        """`podman pull [--creds user:password] <registry>/<name>`; `name` is `repo:tag` or
        `repo@digest`, `registry` is `myreg.internal` unless given."""
        options = ["--creds", creds] if creds else []
        argv = self._podman("pull", "--quiet", *options, f"{registry}/{name}")
        run(argv, env=self._env(), timeout=timeout)

    def inspect(self, name: str) -> dict[str, object]:
        out = run(self._podman("image", "inspect", f"{PREFIX}/{name}"), env=self._env()).stdout
        documents: list[dict[str, object]] = json.loads(out)
        return documents[0]

    def remove_all(self) -> None:
        run(self._podman("rmi", "--all", "--force"), env=self._env(), timeout=60)

    def close(self) -> None:
        """Remove the short runroot; vfs mounts nothing, so the storage is plain files that the
        workdir's owner removes."""
        shutil.rmtree(self._short, ignore_errors=True)
