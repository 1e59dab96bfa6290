"""The real TensorRT Python bindings, made importable on a CPU machine by stub native libraries.

TensorRT's native libraries cannot be installed here (DESIGN.md §2), but the bindings wheels
``tensorrt-cu12-bindings==10.16.1.11`` and ``==11.4.0.106`` are real. Their ``tensorrt.so``
needs ``libnvinfer.so.N``, ``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N`` and imports
nine C symbols from them; stub libraries defining those symbols (returning NULL / 0) are compiled
with gcc at test time, so ``import tensorrt_bindings`` gives the real classes, enums and
signatures, while anything that needs the real library (``trt.Builder(logger)``) fails with
"factory function returned nullptr". Each version runs in its own subprocess
(``LD_LIBRARY_PATH`` = its stubs, ``PYTHONPATH`` = its unpacked wheel). These prove API shape
only. Shared by tests/trt_backend and tests/surgery.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TRTQ_TEST_CACHE", Path.home() / ".cache" / "trtq-tests"))
BINDINGS = {10: "10.16.1.11", 11: "11.4.0.106"}
REPO = Path(__file__).resolve().parent.parent

STUB_SOURCE = r"""
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRuntime_INTERNAL(void* logger, int version) { return NULL; }
void* createInferRefitter_INTERNAL(void* engine, void* logger, int version) { return NULL; }
void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) { return NULL; }
void* createNvOnnxParserRefitter_INTERNAL(void* refitter, void* logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void* getPluginRegistry(void) { return NULL; }
void* getBuilderPluginRegistry(int capability) { return NULL; }
int initLibNvInferPlugins(void* logger, const char* ns) { return 0; }
"""
STUB_LIBS = ("nvinfer", "nvonnxparser", "nvinfer_plugin")


@dataclass(frozen=True)
class TrtBindings:
    """One unpacked bindings wheel and the stub libraries that let it import."""

    major: int
    version: str
    site: Path  # contains tensorrt_bindings/
    stubs: Path  # contains libnvinfer.so.N ...

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(self.stubs), env.get("LD_LIBRARY_PATH", "")])
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), env.get("PYTHONPATH", "")]))
        env["TRTQ_TRT_MAJOR"] = str(self.major)
        env["TRTQ_TRT_SO"] = str(self.site / "tensorrt_bindings" / "tensorrt.so")
        return env

    def run(self, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``python args...`` in the repository root with these bindings importable."""
        return subprocess.run(
            [sys.executable, *args], cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout
        )


def _wheel(version: str) -> Path:
    """Download ``tensorrt-cu12-bindings==version`` with pip (one version per pip command), cached."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
                f"tensorrt-cu12-bindings=={version}",
            ],
            check=True,
        )
        found = sorted(wheels.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    return found[0]


def _unpack(version: str) -> Path:
    target = CACHE / f"tensorrt-cu12-bindings-{version}"
    if (target / ".complete").exists():
        return target
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(_wheel(version)) as zf:
        zf.extractall(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / ".complete").touch()
    return target


def _build_stubs(folder: Path, major: int) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the TensorRT stub libraries")
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "stub.c"
    src.write_text(STUB_SOURCE)
    for lib in STUB_LIBS:
        soname = f"lib{lib}.so.{major}"
        subprocess.run(
            [gcc, "-shared", "-fPIC", "-o", str(folder / soname), f"-Wl,-soname,{soname}", str(src)],
            check=True,
        )
    return folder


def real_bindings(major: int, stub_dir: Path) -> TrtBindings:
    """The bindings of TensorRT ``major`` (fetched with pip once, cached) with stubs in ``stub_dir``.

    Skips the calling test when PyPI cannot be reached or there is no C compiler.
    """
    version = BINDINGS[major]
    try:
        site = _unpack(version)
    except subprocess.CalledProcessError as exc:  # pragma: no cover - no network to PyPI
        pytest.skip(f"cannot pip download tensorrt-cu12-bindings=={version}: {exc}")
    return TrtBindings(major, version, site, _build_stubs(stub_dir, major))
