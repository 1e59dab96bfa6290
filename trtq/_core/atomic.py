"""Atomic file output: write to a temporary file in the target's folder, then rename.

A reader never sees a half-written cache, model or report, and a failure leaves any previous
file untouched.

A command writes several files (a cache, its histograms, a JSON result, a report). Inside
:func:`output_group` they land together or not at all: each file is still renamed into place as
soon as it is written (a later step may read it back), but the file it replaced is kept aside,
and when the block fails every file it wrote is taken back and every replaced one restored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
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


class _Group:
    """The files an :func:`output_group` has put in place, with what each one replaced."""

    def __init__(self) -> None:
        self.placed: dict[Path, Path | None] = {}  # target -> the previous file kept aside, or None
        self.folders: list[Path] = []  # folders made for the outputs, outermost first

    def keep_previous(self, target: Path) -> None:
        """Before ``target`` is replaced for the first time in the group, keep the file there
        aside (a hard link, or a copy where links are refused) so that a rollback can restore it."""
        if target in self.placed:
            return
        previous = None
        if target.is_file():
            # a unique name beside the target, freed again: os.link will not replace a file
            fd, aside = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".previous", dir=target.parent)
            os.close(fd)
            os.unlink(aside)
            try:
                os.link(target, aside)
            except OSError:
                shutil.copy2(target, aside)
            previous = Path(aside)
        self.placed[target] = previous

    def commit(self) -> None:
        for previous in self.placed.values():
            if previous is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(previous)

    def rollback(self) -> None:
        for target, previous in reversed(list(self.placed.items())):
            with contextlib.suppress(OSError):
                if previous is None:
                    os.unlink(target)
                else:
                    os.replace(previous, target)
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):  # left where something else was put in it meanwhile
                folder.rmdir()


_GROUP: ContextVar[_Group | None] = ContextVar("trtq_output_group", default=None)


@contextlib.contextmanager
def output_group(keep_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Make the atomic writes inside the block one transaction.

    On success the files stay. On an exception every file the block wrote is removed, and each
    file it replaced is put back as it was, unless the exception is one of ``keep_on`` (a verdict
    that comes after complete outputs, such as a failed check: the outputs are the evidence).
    Nested groups join the outer one. A crash of the process itself (SIGKILL, power) can leave a
    hidden ``.NAME.*.previous`` file beside an output; the outputs are whole either way.
    """
    if _GROUP.get() is not None:
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, keep_on):
            group.commit()
        else:
            group.rollback()
        raise
    else:
        group.commit()
    finally:
        _GROUP.reset(token)


@contextlib.contextmanager
def outside_group() -> Iterator[None]:
    """Writes in the block stay whatever happens to the :func:`output_group` around it: for a
    checkpoint, which is written for a later run (``--resume``) rather than as this run's output."""
    token = _GROUP.set(None)
    try:
        yield
    finally:
        _GROUP.reset(token)


def _place(tmp: str, target: Path) -> None:
    """Rename ``tmp`` over ``target`` (as part of the current :func:`output_group`, if any)."""
    with _writing(target):
        group = _GROUP.get()
        if group is not None:
            group.keep_previous(target)
        os.replace(tmp, target)


def _make_folder(target: Path) -> None:
    """Make ``target``'s folder (and its parents); an :func:`output_group` takes them back with
    the files when it fails."""
    missing = []
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    group = _GROUP.get()
    if group is not None:
        group.folders.extend(reversed(missing))


def _temporary(target: Path, suffix: str) -> tuple[int, str]:
    with _writing(target):
        _make_folder(target)
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
        _place(tmp, target)
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
        _place(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` for a writer that puts several files side by side
    (``onnx.save_model`` with external data). When the block succeeds, every file in the folder is
    moved beside ``path`` under its own name, ``path``'s own file last, as one
    :func:`output_group`: a reader never finds a model without its data, and a failure leaves
    every previous file as it was. The folder is removed either way."""
    target = Path(path)
    with _writing(target):
        _make_folder(target)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield folder
        names = sorted(p.name for p in folder.iterdir() if p.name != target.name) + [target.name]
        with output_group():
            for name in names:
                with _writing(target.parent / name):
                    os.chmod(folder / name, _FILE_MODE)
                _place(str(folder / name), target.parent / name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
