"""A non-editable install works: the project is built into a wheel from the files a clone has
(tracked and new, not ignored), installed with ``--no-deps`` into a fresh venv, and run from
another folder. The venv reaches the already-installed dependencies through a ``.pth`` line
naming this interpreter's site-packages: a plain path line, so that folder's own ``.pth``
files -- among them the editable install's finder -- are not run and cannot hide a file the
wheel lacks. Nothing is downloaded (``--no-index``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from repo import REPO

PACKAGES = ("supernet", "supernet.app", "datamodules", "derive", "benchmarks")


def _clone_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


def _copy_checkout(dest: Path) -> None:
    for rel in _clone_files():
        src, dst = REPO / rel, dest / rel
        if not (src.exists() or src.is_symlink()):
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)


def _run(argv: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout to know a clone's files")
def test_a_wheel_install_runs_attnas_and_finds_the_shipped_configs(tmp_path: Path) -> None:
    src, wheels, venv, work = (tmp_path / n for n in ("src", "wheels", "venv", "work"))
    _copy_checkout(src)
    work.mkdir()
    out = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--no-index", "-q", "-w", str(wheels), str(src)], tmp_path, 300)
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(wheels.glob("attnas-*.whl"))
    out = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    python = venv / "bin" / "python"
    out = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                "--no-index", "-q", str(wheel)], tmp_path, 300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the dependencies: this interpreter's site-packages, as a plain path (its .pth not run)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], work).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_attnas_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))

    # every package comes from the wheel, not from the checkout
    out = _run([str(python), "-c", "import importlib, sys\nfor n in sys.argv[1:]: "
                "print(importlib.import_module(n).__file__)", *PACKAGES], work)
    assert out.returncode == 0, out.stderr[-3000:]
    for line in out.stdout.split():
        assert Path(line).resolve().is_relative_to(site.resolve()), line

    out = _run([str(venv / "bin" / "attnas"), "--help"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "demo" in out.stdout and "search" in out.stdout

    # the demo's config and every shipped config are in the install
    out = _run([str(python), "-c", "from supernet import configs\nfrom supernet.app import demo\n"
                "print(demo.CONFIG)\nprint(configs.display(demo.CONFIG))\n"
                "print(*sorted(p.relative_to(configs.ROOT).as_posix() "
                "for p in configs.ROOT.rglob('*.yaml')))"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    config, shown, names = out.stdout.splitlines()
    assert Path(config).is_file() and Path(config).resolve().is_relative_to(site.resolve())
    assert shown == str(Path(config).resolve())  # no configs/ here: the installed path
    checkout = (REPO / "configs").resolve()
    shipped = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*.yaml"))
    assert names.split() == shipped

    # and the search CLI reads the demo config from there
    out = _run([str(venv / "bin" / "attnas"), "search", "fit", "-c", config, "--print_config"],
               work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "position_encoding: sincos" in out.stdout
