"""The one place where TensorRT and the CUDA runtime are imported, with one-line errors.

Every TensorRT command (calibrators, the TensorRT backend, ``surgery check --tensorrt``) goes
through :func:`import_tensorrt`, and those that run on the GPU through :func:`require_gpu`. Without
TensorRT, without cuda-python, or without a GPU they raise :class:`MissingDependencyError` whose
message says what is missing and that ``--backend onnxruntime`` works on the CPU.

Import name: the ``tensorrt`` meta package (``pip install tensorrt``) provides ``tensorrt``; the
bare bindings wheel (``tensorrt-cu12-bindings``) provides ``tensorrt_bindings``. Both are the
same module, so either is accepted (``tensorrt`` first).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from trtq._core.errors import MissingDependencyError, first_line

F = TypeVar("F", bound=Callable)


def targets(*majors: int) -> Callable[[F], F]:
    """Mark a function as written for these TensorRT major versions only (default: all).

    The API-conformance tests read this decorator from the source and check every ``trt.``
    attribute the function uses against the real bindings of each version named.
    """

    def deco(fn: F) -> F:
        fn.__trt_targets__ = tuple(majors)  # type: ignore[attr-defined]
        return fn

    return deco


CPU_HINT = "use `--backend onnxruntime` (CPU), which needs neither"
_MODULE_NAMES = ("tensorrt", "tensorrt_bindings")


def import_tensorrt(hint: str = CPU_HINT) -> ModuleType:
    """Import TensorRT's Python module or raise :class:`MissingDependencyError` (one line).

    ``hint`` ends the message: what the user can do instead (default: the CPU backend).
    """
    reasons = []
    for name in _MODULE_NAMES:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as exc:  # OSError: the bindings found, libnvinfer not
            reasons.append(first_line(exc))
            continue
        # A folder named "tensorrt" on sys.path (e.g. a test folder) imports as an empty
        # namespace package; only a module with a version is TensorRT.
        if hasattr(module, "__version__") and hasattr(module, "Builder"):
            return module
        reasons.append(f"'{name}' on sys.path is not TensorRT")
    raise MissingDependencyError(
        f"TensorRT is not available ({reasons[0]}); install TensorRT 10.x or 11.x with "
        f"`pip install 'trtq[trt]'` on a machine with an NVIDIA GPU, or {hint}"
    )


def trt_version(trt: ModuleType) -> tuple[int, int, int]:
    """``tensorrt.__version__`` as ``(major, minor, patch)``; ``"10.16.1.11"`` -> ``(10, 16, 1)``."""
    parts = [int(p) for p in str(trt.__version__).split(".")[:3] if p.isdigit()]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def trt_version_string(trt: ModuleType) -> str:
    """The running TensorRT as ``"major.minor.patch"``: ``"10.16.1.11"`` -> ``"10.16.1"``."""
    return ".".join(str(v) for v in trt_version(trt))


def trt_major(trt: ModuleType) -> int:
    """The major version that picks the build path: 10 (implicit INT8) or 11 (explicit Q/DQ)."""
    return trt_version(trt)[0]


def import_cudart() -> ModuleType:
    """Import ``cuda.bindings.runtime`` (cuda-python >= 12.6) or the older ``cuda.cudart``."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingDependencyError(
        f"cuda-python is not installed (needed for TensorRT calibration buffers); "
        f"install it with `pip install 'trtq[trt]'`, or {CPU_HINT}"
    )


def require_gpu() -> int:
    """Return the number of CUDA devices, or raise :class:`MissingDependencyError` if there is none."""
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        name = _error_name(cudart, err)
        raise MissingDependencyError(f"no usable NVIDIA GPU ({name}); TensorRT needs one, {CPU_HINT}")
    return int(count)


def _error_name(cudart: ModuleType, err: object) -> str:
    try:
        status, name = cudart.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - a broken runtime
        return getattr(err, "name", str(err))
