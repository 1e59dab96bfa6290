"""Compiled numba kernels are cached in a per-user folder, never inside the installed package.

numba's in-tree cache (``cache=True`` alone) writes ``__pycache__/*.nbi|*.nbc`` into
site-packages; those folders survive ``pip install -e .`` and shadow the editable package
(``trtq.calib.methods`` then has an "unknown location"). Each test lays the package out as
``pip install .`` does (the ``package-dir`` mapping of pyproject.toml) and runs every kernel in a
fresh interpreter that imports that copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUN_EVERY_KERNEL = """
import numpy as np
import trtq.calib
from trtq.calib.histogram import HistogramSet
from trtq.calib.run import compute_amax
from trtq.precision.metrics import tensor_metrics

x = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
hs = HistogramSet(["t"])
hs.collect({"t": x})
hs.collect({"t": 8 * x})  # range growth: the merge kernel
hs.merge(HistogramSet.merged([hs]))
for m in ("entropy2", "mse", "percentile", "minmax"):
    assert compute_amax(hs, m, threads=1)["t"] > 0
tensor_metrics(x, x)
print(trtq.calib.__file__)
"""


def _install_copy(site: Path) -> Path:
    """Copy the packages where ``pip install .`` puts them (``package-dir`` of pyproject.toml)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in tool["package-dir"].items():
        shutil.copytree(
            ROOT / folder, site / package.replace(".", "/"), ignore=shutil.ignore_patterns("__pycache__")
        )
    return site / "trtq"


def _run_kernels(site: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    environ.pop("XDG_CACHE_HOME", None)
    environ.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", **env)
    return subprocess.run(
        [sys.executable, "-c", RUN_EVERY_KERNEL], cwd=cwd, env=environ, capture_output=True, text=True
    )


def _numba_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc"))


@pytest.fixture
def installed(tmp_path):
    site = tmp_path / "site-packages"
    package = _install_copy(site)
    work = tmp_path / "work"
    work.mkdir()
    return site, package, work


def test_kernels_cache_in_the_user_cache_folder_not_in_the_package(installed, tmp_path):
    site, package, work = installed
    xdg = tmp_path / "xdg"
    r = _run_kernels(site, work, XDG_CACHE_HOME=str(xdg))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(package / "calib" / "__init__.py")  # the installed copy ran
    assert _numba_files(package) == []
    assert not list(package.rglob("__pycache__"))
    cached = _numba_files(xdg / "trtq" / "numba")
    assert {p.name.split(".")[0] for p in cached} >= {"_kernels", "entropy2", "mse", "metrics"}
    # a second process loads them from there instead of compiling again
    again = _run_kernels(site, work, XDG_CACHE_HOME=str(xdg))
    assert again.returncode == 0, again.stderr
    assert _numba_files(xdg / "trtq" / "numba") == cached


def test_explicit_numba_cache_dir_is_respected(installed, tmp_path):
    site, package, work = installed
    mine = tmp_path / "mine"
    r = _run_kernels(site, work, NUMBA_CACHE_DIR=str(mine), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert r.returncode == 0, r.stderr
    assert _numba_files(mine) and _numba_files(package) == []
    assert not (tmp_path / "xdg").exists()


def test_unwritable_cache_folder_means_no_disk_cache_and_nothing_in_the_package(installed, tmp_path):
    site, package, work = installed
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")  # cannot be created, even by root
    r = _run_kernels(site, work, XDG_CACHE_HOME=str(blocker))
    assert r.returncode == 0, r.stderr
    assert _numba_files(package) == [] and _numba_files(tmp_path) == []
