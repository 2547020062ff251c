"""A regular (non-editable) install, the way an operator makes one (issue 12).

Offline and quick: a wheel built from this checkout with ``--no-deps --no-build-isolation``, installed
with ``--no-deps --no-index`` into fresh venvs. The "bare" venv has nothing else (``pip install
fleetmeter``); the "deps" venv sees this interpreter's site-packages (grpc, numpy, onnx...) through a
``.pth`` line, which adds the folder without running its ``.pth`` files, so the editable install of the
development environment stays out and the venv's wheel is the only fleetmeter.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd, timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """This checkout's wheel, built from a copy of its tracked and untracked-not-ignored files."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the checkout's files")
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], ROOT)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", out, src], src, timeout_s=300)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("fleetmeter-*.whl")
    return found


def _venv(where: Path, wheel: Path, with_deps: bool) -> Path:
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                      wheel], where)
    assert installed.returncode == 0, installed.stderr
    if with_deps:
        purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            where).stdout.strip())
        host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (purelib / "zz_host_site_packages.pth").write_text("\n".join(sorted(host)) + "\n")
    return where / "bin"


@pytest.mark.parametrize("command", ["fleetmeter", "fleetmeter-agent"])
def test_bare_install_names_the_extra_instead_of_a_traceback(wheel, tmp_path, command):
    bin_dir = _venv(tmp_path / "bare", wheel, with_deps=False)
    proc = _run([bin_dir / command, "--help"], tmp_path)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{command} needs ") and "pip install 'fleetmeter[agent]'" in line, line


def test_a_checkout_does_not_shadow_the_installed_package(wheel, tmp_path):
    """``python -m`` inside the checkout puts the checkout's root first on ``sys.path`` (so do Ray workers
    and the agent's measurement worker); the installed package must still be the one that runs."""
    bin_dir = _venv(tmp_path / "deps", wheel, with_deps=True)
    site = _run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    installed = Path(site.stdout.strip()) / "fleetmeter"
    where = _run([bin_dir / "python", "-c",
                  "import fleetmeter.modeler, fleetmeter.agent.cli as a; print(fleetmeter.modeler.__file__); "
                  "print(a.__file__)"], ROOT)
    assert where.returncode == 0, where.stderr
    assert [Path(p).is_relative_to(installed) for p in where.stdout.split()] == [True, True], where.stdout
    families = _run([bin_dir / "python", "-m", "fleetmeter.cli", "zoo", "families", "--json"], ROOT)
    assert families.returncode == 0, families.stderr
    assert '"resnet"' in families.stdout
