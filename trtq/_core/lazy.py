"""Lazy imports of optional heavy dependencies, with an actionable error when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from trtq._core.errors import MissingDependencyError

_EXTRA_FOR = {
    "tensorrt": "trt",
    "tensorrt_bindings": "trt",
    "cuda": "cuda",
    "cuda.bindings": "cuda",
    "cuda.bindings.runtime": "cuda",
}


def lazy_import(name: str, *, purpose: str = "") -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming the pip extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # also catches OSError-wrapped native load failures below
        extra = _EXTRA_FOR.get(name)
        hint = f"pip install 'trtq[{extra}]'" if extra else f"pip install {name.split('.')[0]}"
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"Python module '{name}' is not available{why}: {exc}. Install it with: {hint}"
        ) from exc
    except OSError as exc:
        raise MissingDependencyError(
            f"'{name}' is installed but its native libraries failed to load: {exc}"
        ) from exc
