"""Atomic file output: write to a temporary file in the target's folder, then rename.

A reader never sees a half-written cache, model or report, and a failure leaves any previous
file untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from trtq._core.errors import InputError


def _plain_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives: 0o666 minus the process umask.

    Read once at import: ``os.umask`` can only be read by setting it, which is process-wide.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _plain_file_mode()


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """Our own steps of a write (folder, temporary file, flush, rename): an ``OSError`` there
    (read-only folder, a parent that is a file, a full disk) becomes one line naming ``target``."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"{target}: cannot write it: {exc.strerror or exc}") from exc


def _temporary(target: Path, suffix: str) -> tuple[int, str]:
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; outputs are meant to be shared
    return fd, tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary). On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open supports modes 'w' and 'wb'")
    target = Path(path)
    fd, tmp = _temporary(target, ".tmp")
    try:
        with os.fdopen(
            fd, mode, encoding=None if "b" in mode else encoding, newline=None if "b" in mode else ""
        ) as fh:
            yield fh
            with _writing(target):
                fh.flush()
                os.fsync(fh.fileno())
        with _writing(target):
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh, _writing(Path(path)):
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh, _writing(Path(path)):
        fh.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for libraries that write by file name
    (``np.savez``, ``onnx.save``); it is renamed over ``path`` when the block succeeds."""
    target = Path(path)
    fd, tmp = _temporary(target, suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with _writing(target):
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
