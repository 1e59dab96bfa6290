"""Output paths checked before a command does any work.

A command that would fail only when it writes its second file (a read-only folder, a parent that
is a file) leaves the first one behind, and one whose output names its own input replaces the
model it reads. :func:`check_outputs` refuses both up front, with one line naming the path; the
atomic writers (:mod:`trtq._core.atomic`) still turn a failure at write time (a full disk, a
folder made read-only meanwhile) into such a line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trtq._core.errors import InputError

PathLike = str | os.PathLike


@dataclass(frozen=True)
class DataFolder:
    """An input folder (``--data``) and the file suffixes read from it: an output may be written
    into it, but may not replace one of those files."""

    path: PathLike
    suffixes: tuple[str, ...]


def _key(path: Path) -> Path:
    """The file ``path`` names, links and ``..`` resolved (it need not exist)."""
    return path.expanduser().resolve()


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:  # a name the file system refuses (too long) or cannot stat: compare the names
        pass
    return _key(a) == _key(b)


def writable_folder(path: PathLike) -> None:
    """Raise :class:`InputError` unless a file can be created at ``path``: it is not a folder, and
    its folder exists and is writable, or can be made (its nearest existing ancestor is a
    writable folder)."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{target}: cannot create it: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{target}: cannot write to {ancestor} (permission denied or read-only)")


#: The output flags whose ``-`` means stdout (any other output named ``-`` is refused: it would be
#: a file called ``-``).
STDOUT_FLAGS = ("--json",)


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | DataFolder | None] = {},  # noqa: B006
) -> None:
    """Before any work: every output (flag -> path; ``None`` skipped, ``-`` = stdout, only for
    :data:`STDOUT_FLAGS`, else refused) can
    be written (:func:`writable_folder`), no two outputs name the same file, and no output names
    an input (flag -> path) or a data file inside an input folder (:class:`DataFolder`). Raises
    :class:`InputError` naming the path and both flags."""
    seen: list[tuple[str, Path]] = []
    for flag, value in outputs.items():
        if value is not None and str(value) == "-" and flag not in STDOUT_FLAGS:
            raise InputError(
                f"{flag} -: only {', '.join(STDOUT_FLAGS)} can write to stdout; give {flag} a file name"
            )
        if value is None or str(value) == "-":
            continue
        try:
            _check_one(flag, value, seen, inputs)
        except OSError as exc:  # the output's own place, e.g. a name longer than the file system allows
            raise InputError(f"{value}: cannot write {flag} there: {exc.strerror or exc}") from exc


def _check_one(
    flag: str,
    value: PathLike,
    seen: list[tuple[str, Path]],
    inputs: Mapping[str, PathLike | DataFolder | None],
) -> None:
    """:func:`check_outputs` for one output (``seen``: the outputs checked before it, appended to)."""
    path = Path(value)
    for other, prev in seen:
        if _same_file(path, prev):
            raise InputError(f"{value}: given as both {other} and {flag}; name different files")
    for what, given in inputs.items():
        if isinstance(given, DataFolder):
            clash = (
                path.suffix.lower() in given.suffixes
                and path.exists()
                and _key(path).is_relative_to(_key(Path(given.path)))
            )
        else:
            clash = given is not None and str(given) != "-" and _same_file(path, Path(given))
        if clash:
            raise InputError(f"{value}: refusing to overwrite the input ({what}) with {flag}")
    writable_folder(path)
    seen.append((flag, path))
