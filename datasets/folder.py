"""Open a data folder: find its files, tell which kind it is, order/shuffle/limit them."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo
from trtq.datasets.dataset import Dataset
from trtq.datasets.image_folder import ImageFolder
from trtq.datasets.input_spec import static_inputs
from trtq.datasets.preprocess import PreprocessSpec
from trtq.datasets.tensor_folder import TensorFolder, shapes_from_samples

# Folder kinds, tried by file extension. Each has ``kind``, ``extensions`` and ``from_files``.
FOLDER_KINDS: list[type] = [ImageFolder, TensorFolder]

logger = logging.getLogger(__name__)


def files_by_kind(root: Path, kinds: Sequence[type]) -> dict[type, list[Path]]:
    """Files under ``root`` (recursive) by folder kind, from one walk: those whose extension
    (case-insensitive) is one of the kind's ``extensions``, sorted by their path relative to
    ``root``. Hidden files and folders (name starting with ".", e.g. macOS ``._x.jpg``) are left
    out; symlinked folders are not followed (no loops)."""
    kind_of = {e.lower(): cls for cls in kinds for e in cls.extensions}
    found: dict[type, list[Path]] = {cls: [] for cls in kinds}
    for ext, path in _walk(root, set(kind_of)):
        found[kind_of[ext]].append(path)
    return {cls: _sorted(root, files) for cls, files in found.items()}


def _walk(root: Path, exts: set[str]) -> Iterator[tuple[str, Path]]:
    """(lower-case extension, path) of the files under ``root`` with one of ``exts``."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            ext = os.path.splitext(name)[1].lower()
            if not name.startswith(".") and ext in exts:
                path = Path(folder) / name
                try:  # a FIFO, socket or device named like an image would block or never end
                    if not stat.S_ISREG(os.stat(path).st_mode):
                        logger.warning("%s: skipped: not a regular file", path)
                        continue
                except OSError:
                    pass  # a dangling link: its reader reports it
                yield ext, path


def _sorted(root: Path, files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def open_dataset(
    path: str | os.PathLike,
    inputs: Sequence[TensorInfo],
    preprocess: PreprocessSpec | None = None,
    *,
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    strict: bool = False,
    workers: int | None = None,
) -> Dataset:
    """Open a folder of images (jpg/jpeg/png/bmp/tif/tiff/webp) or tensors (.npy/.npz) for ``inputs``.

    Files are found recursively and sorted by relative path; ``shuffle`` permutes that list with
    ``seed`` (numpy's default generator), then ``limit`` keeps the first N (image files, or
    tensor samples). ``preprocess`` (images only; default: the "raw" preset) may set ``dtype``,
    which then replaces the inputs' dtype. Raises :class:`InputError` for a missing path, a file
    instead of a folder, a folder without data files or with both images and tensors, and bad
    files when ``strict``. ``workers`` is the default decode thread count of ``batches()``.
    """
    root = Path(path)
    found = check_folder(root)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    if not inputs:
        raise InputError("the model has no inputs to feed")
    inputs = static_inputs(inputs)
    if len(found) > 1:
        what = " and ".join(f"{len(f)} {cls.noun} file(s)" for cls, f in found.items())
        raise InputError(f"{root} holds {what}: keep each kind in its own folder")
    ((cls, files),) = found.items()
    if shuffle:
        files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    if preprocess is not None and preprocess.dtype is not None:
        inputs = [replace(s, dtype=np.dtype(preprocess.dtype)) for s in inputs]
    source = cls.from_files(files, inputs, preprocess, limit)
    return Dataset(root, source, inputs, strict=strict, workers=workers)


def check_folder(root: Path) -> dict[type, list[Path]]:
    """The data files under ``root`` by folder kind (kinds with none left out); :class:`InputError`
    for a missing path, a file instead of a folder, or a folder without data files."""
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root}: is a file; the data must be a folder of images or .npy/.npz tensors")
    found = {cls: files for cls, files in files_by_kind(root, FOLDER_KINDS).items() if files}
    if not found:
        looked = ", ".join(e for cls in FOLDER_KINDS for e in cls.extensions)
        raise InputError(f"no images or tensors found in {root} (looked for {looked}, in all subfolders)")
    return found


def sample_shapes(
    root: Path, inputs: Sequence[TensorInfo], given: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Shapes of the dynamic inputs not in ``given``, read from the first tensor file under
    ``root`` (see :func:`~trtq.datasets.tensor_folder.shapes_from_samples`); ``{}`` for image
    folders, missing folders and models whose inputs need nothing."""
    given = dict(given or {})
    if not root.is_dir() or all(
        t.name in given or all(isinstance(d, int) and d > 0 for d in (t.shape or ())[1:]) for t in inputs
    ):
        return {}
    files = files_by_kind(root, [TensorFolder])[TensorFolder]
    return shapes_from_samples(files, inputs, given)
