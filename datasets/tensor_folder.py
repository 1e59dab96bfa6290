"""``.npy`` / ``.npz`` files as samples, for non-image and multi-input models.

- ``.npy``: one array, for single-input models;
- ``.npz``: one array per input name (``np.savez(path, x=..., im_shape=...)``); extra arrays
  are ignored.

An array whose rank equals the input's rank is a batch along axis 0, rank one less is one sample
(see :func:`~trtq.datasets.batching.split_samples`). Shapes are checked from the file headers when
the folder is opened, so wrong-shape files are reported before any model runs. Arrays are cast
to the input dtype. No preprocessing is applied.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo
from trtq.datasets.bad_file import BadFile
from trtq.datasets.batching import Sample, common_count, count_from_shape, split_samples

logger = logging.getLogger(__name__)

TENSOR_EXTENSIONS = (".npy", ".npz")


@dataclass(frozen=True)
class TensorChunk:
    """Samples ``start:stop`` of one file (``.npy`` files are read in chunks of a batch)."""

    path: Path
    start: int
    stop: int


class TensorFolder:
    kind = "tensors"
    noun = "tensor"
    extensions = TENSOR_EXTENSIONS

    def __init__(self, files: Sequence[Path], inputs: Sequence[TensorInfo], limit: int | None = None) -> None:
        self.inputs = list(inputs)
        npy = [f for f in files if f.suffix.lower() == ".npy"]
        if npy and len(self.inputs) != 1:
            raise InputError(
                f"{npy[0]}: .npy files hold one array but the model has inputs {[s.name for s in inputs]}; "
                "save one .npz per sample or batch with one array per input name"
            )
        self.open_skips: list[tuple[str, str]] = []
        self.counts: list[tuple[Path, int]] = []
        total = 0
        for path in files:
            if limit is not None and total >= limit:
                break
            try:
                n = self._count(path)
            except BadFile as exc:
                self.open_skips.append((str(path), str(exc)))
                continue
            if limit is not None:
                n = min(n, limit - total)
            self.counts.append((path, n))
            total += n
        self.total = total
        self.files = [p for p, _ in self.counts]

    @classmethod
    def from_files(
        cls, files: Sequence[Path], inputs: Sequence[TensorInfo], preprocess: object, limit: int | None
    ) -> TensorFolder:
        """``limit`` counts samples; ``preprocess`` does not apply to tensors."""
        if preprocess is not None:
            logger.warning("preprocessing options do not apply to a folder of .npy/.npz tensors; ignored")
        return cls(files, inputs, limit)

    def __len__(self) -> int:
        return self.total

    def samples_per_item(self) -> float:
        return self.total / len(self.counts) if self.counts else 1.0

    def items(self, batch_size: int) -> list[TensorChunk]:
        out = []
        for path, n in self.counts:
            step = batch_size if path.suffix.lower() == ".npy" else n
            out.extend(TensorChunk(path, s, min(n, s + step)) for s in range(0, n, step))
        return out

    @staticmethod
    def item_file(item: TensorChunk) -> Path:
        return item.path

    def load(self, chunk: TensorChunk) -> list[Sample]:
        try:
            if chunk.path.suffix.lower() == ".npy":
                arrays = {self.inputs[0].name: np.load(chunk.path, mmap_mode="r", allow_pickle=False)}
            else:
                with np.load(chunk.path, allow_pickle=False) as npz:
                    arrays = {s.name: npz[s.name] for s in self.inputs}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise BadFile(f"cannot read the arrays ({exc})") from exc
        # one-sample files stay whole; batches are sliced to the chunk. A memory-mapped .npy is
        # copied into memory; .npz arrays already are in memory.
        to_array = np.array if chunk.path.suffix.lower() == ".npy" else np.asarray
        for spec in self.inputs:
            a = arrays[spec.name]
            arrays[spec.name] = to_array(a[chunk.start : chunk.stop] if a.ndim == len(spec.shape) else a)
            if arrays[spec.name].dtype.kind in "fc" and np.isnan(arrays[spec.name]).any():
                # one NaN makes every range it reaches NaN: the whole calibration would be lost
                raise BadFile(f"'{spec.name}' holds NaN")
        return split_samples(arrays, self.inputs)

    def _count(self, path: Path) -> int:
        """Samples in ``path``, from the array headers only (nothing is decompressed)."""
        headers = (
            _npy_header(path, self.inputs[0].name)
            if path.suffix.lower() == ".npy"
            else _npz_headers(path, self.inputs)
        )
        n = common_count({s.name: count_from_shape(s, *headers[s.name]) for s in self.inputs})
        if n == 0:
            raise BadFile("holds no samples (axis 0 has size 0)")
        return n


def _npy_header(path: Path, name: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    try:
        with open(path, "rb") as fh:
            shape, dtype = _read_header(fh)
            if dtype.hasobject:  # pickled Python objects: not numbers, and never loaded (no pickle)
                raise BadFile(f"dtype {dtype}, expected numbers")
            need = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = path.stat().st_size
    except OSError as exc:
        raise BadFile(f"cannot read ({exc.strerror or exc})") from exc
    if size < need:
        raise BadFile(f"truncated .npy file ({size} bytes, the header promises {need})")
    return {name: (shape, dtype)}


def _npz_headers(path: Path, inputs: Sequence[TensorInfo]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            missing = [s.name for s in inputs if s.name not in members]
            if missing:
                raise BadFile(f"no array named {missing} (it holds {sorted(members)})")
            out = {}
            for s in inputs:
                with zf.open(members[s.name]) as fh:
                    out[s.name] = _read_header(fh)
            return out
    except zipfile.BadZipFile as exc:
        raise BadFile(f"not a valid .npz file ({exc})") from exc
    except OSError as exc:
        raise BadFile(f"cannot read ({exc.strerror or exc})") from exc


def _read_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(fh)
    except (ValueError, EOFError) as exc:
        raise BadFile(f"not a valid .npy array ({exc})") from exc
    return tuple(shape), np.dtype(dtype)


def shapes_from_samples(
    files: Sequence[Path], inputs: Sequence[TensorInfo], given: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Full shapes (batch dim first) for the inputs whose non-batch dims are dynamic and not in
    ``given``, read from the array headers of the first readable ``.npy``/``.npz`` file (nothing
    is decompressed). A sequence model's ``input_ids [batch, seq]`` saved as ``(32,)`` or
    ``(1, 32)`` gets ``(1, 32)``; the batch dim is then replaced by the batch size. Files whose
    arrays differ from these shapes are reported as bad files when the folder is opened."""
    given = dict(given or {})
    wanted = [
        t
        for t in inputs
        if t.name not in given and any(not (isinstance(d, int) and d > 0) for d in (t.shape or ())[1:])
    ]
    if not wanted:
        return {}
    for path in files:
        try:
            headers = (
                _npy_header(path, wanted[0].name)
                if path.suffix.lower() == ".npy"
                else _npz_headers(path, wanted)
            )
        except BadFile:
            continue
        if any(t.name not in headers for t in wanted):  # a .npy holds one input: its reader says so
            continue
        out = {}
        for t in wanted:
            shape = headers[t.name][0]
            rank = len(t.shape)
            if len(shape) == rank - 1:  # one sample
                out[t.name] = (1, *shape)
            elif len(shape) == rank:  # a batch
                out[t.name] = tuple(shape)
        return out
    return {}
