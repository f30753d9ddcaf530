"""The benchmark as a user gets it: the package installed (no checkout, no `tests/`), and
`distributed-images bench` run from it without the `bench` extra (no matplotlib): it still
writes results.json and results.md, and says in one line why there is no results.png.

The package is installed with pip into a directory of its own from a copy of the working tree
that leaves `tests/` out, and run from another directory, so nothing of the checkout is on the
path; matplotlib is hidden by a `sitecustomize` module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGES = ("distributed_images", "node", "tracker", "bench")
HIDE_MATPLOTLIB = "import sys\nsys.modules['matplotlib'] = None  # as if it were not installed\n"


@dataclass(frozen=True)
class Installed:
    site: Path  # the package and its console script (bin/)
    cwd: Path  # an empty directory to run it from

    def env(self, *extra_path: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*extra_path, self.site))
        return env

    def run(self, argv: list[str], *extra_path: Path) -> subprocess.CompletedProcess[str]:
        """`argv` from the empty directory, with the installed package alone on the path."""
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env(*extra_path),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            CHECKOUT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    site = base / "site"
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    argv += ["--no-build-isolation", "--target", str(site), str(source)]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    (base / "cwd").mkdir()
    return Installed(site, base / "cwd")


def test_the_bench_command_and_benchmarks_import_from_the_installed_package_without_tests(
    installed: Installed,
) -> None:
    """`distributed-images bench` (bench.cli and all it imports), node_pull and seed_import."""
    script = (
        "import sys\n"
        "sys.modules['tests'] = None  # importing anything from tests/ fails\n"
        "import bench.cli, bench.node_pull, bench.seed_import\n"
        "print(sorted(m for m in sys.modules if m.startswith('bench')))\n"
        "print(bench.cli.__file__)\n"
    )
    result = installed.run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    loaded, where = result.stdout.splitlines()
    assert "'bench.cluster'" in loaded and "'bench.scenarios'" in loaded
    assert Path(where).is_relative_to(installed.site)
    for module in ("bench.node_pull", "bench.seed_import"):
        usage = installed.run([sys.executable, "-m", module, "--help"])
        assert usage.returncode == 0 and usage.stdout.startswith("usage:"), usage.stderr


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    tools = [t for t in ("ip", "tc", "skopeo", "docker-registry") if shutil.which(t) is None]
    return f"missing {', '.join(tools)}" if tools else None


@pytest.mark.netns
@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_the_installed_bench_without_matplotlib_writes_json_and_markdown(
    installed: Installed, tmp_path: Path
) -> None:
    hider = tmp_path / "hide-matplotlib"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE_MATPLOTLIB)
    out = tmp_path / "out"
    argv = [str(installed.site / "bin" / "distributed-images"), "bench", "--nodes", "1"]
    argv += ["--image-size", "4MiB", "--layers", "1", "--scenarios", "direct"]
    argv += ["--out", str(out), "--workdir", str(tmp_path / "work")]
    result = installed.run(argv, hider)
    assert result.returncode == 0, result.stderr[-4000:]
    document = json.loads((out / "results.json").read_text())
    assert document["scenarios"]["direct"]["failed_pulls"] == 0
    assert "| direct |" in (out / "results.md").read_text()
    assert not (out / "results.png").exists()
    why = [line for line in result.stderr.splitlines() if "results.png" in line]
    assert len(why) == 1, result.stderr[-4000:]
    assert "matplotlib" in why[0] and "pip install 'distributed-images[bench]'" in why[0]
