"""numba's ``njit`` with the on-disk cache of compiled kernels kept out of the installed package.

With ``cache=True`` alone numba writes ``*.nbi``/``*.nbc`` files into a ``__pycache__`` folder
beside the source, i.e. inside site-packages. That fails on read-only installs, and the folders
it leaves survive ``pip uninstall`` (pip removes only the files it installed), where they
shadow a later ``pip install -e .`` of the same package: ``trtq.calib.methods`` then imports as
an empty namespace package ("unknown location").

:func:`njit` caches into one per-user folder instead, chosen in this order:

1. ``$NUMBA_CACHE_DIR`` when the user set it (numba's own setting, always respected);
2. ``$XDG_CACHE_HOME/trtq/numba``, else ``~/.cache/trtq/numba`` (created on demand).

If that folder cannot be created or written, the kernels are compiled without an on-disk cache
(compiled once per process); they never fall back to the package's folders. Only trtq's own
kernels are affected: numba's global setting is set just while they are decorated.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """The per-user folder for trtq's compiled kernels (not created here)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "trtq" / "numba"


@lru_cache(maxsize=1)
def kernel_cache_dir() -> str | None:
    """The folder trtq's kernels are cached in, created if needed; ``None`` if not writable."""
    path = default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except (OSError, RuntimeError):  # RuntimeError: no home folder to expand
        return None
    return str(path)


@contextmanager
def _numba_cache_dir(path: str):
    from numba.core import config

    saved = config.CACHE_DIR
    config.CACHE_DIR = path
    try:
        yield
    finally:
        config.CACHE_DIR = saved


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)`` whose on-disk cache is :func:`kernel_cache_dir`, or none.

    numba picks a function's cache folder when it is decorated, so the folder is set in numba's
    config for the decoration only. Pass ``cache=False`` to compile without a disk cache.
    """
    import numba

    cache = options.pop("cache", True)

    def deco(fn: Callable) -> Callable:
        path = kernel_cache_dir() if cache else None
        if path is None:
            return numba.njit(cache=False, **options)(fn)
        with _numba_cache_dir(path):
            return numba.njit(cache=True, **options)(fn)

    return deco
