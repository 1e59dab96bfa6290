"""Samples in, fixed-size batches out; and the rule that tells one sample from a batch of them.

Every batch has exactly ``batch_size`` samples (TensorRT calibration needs one shape); a tail
that does not fill a batch is dropped with one warning. Each batch is a new set of C-contiguous
arrays in the inputs' dtypes, so a consumer may keep it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from trtq._core.progress import ProgressFn
from trtq._core.tensors import TensorInfo
from trtq.datasets.bad_file import BadFile

logger = logging.getLogger(__name__)

Sample = dict[str, np.ndarray]


@dataclass
class DatasetStats:
    """What the latest pass of ``batches()`` did.

    ``used``: samples handed out in full batches; ``skipped``: bad files (each also in
    ``skipped_files`` as ``(file, reason)``, counted once per dataset); ``dropped``: good
    samples left over after the last full batch.
    """

    used: int = 0
    skipped: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0

    def to_dict(self, path: str | None) -> dict:
        """The ``data`` block of docs/SCHEMA.md for a dataset read from ``path``."""
        return {
            "path": str(path) if path else None,
            "images_used": self.used,
            "images_skipped": len(self.skipped_files),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped_files],
        }


def split_samples(arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorInfo]) -> list[Sample]:
    """Split arrays keyed by input name into samples; raises :class:`BadFile` if they do not fit.

    An array whose rank equals the input's rank is a batch of samples along axis 0 (any count);
    one with rank one less is a single sample. Non-batch dims must match the input exactly.
    All inputs must hold the same number of samples.
    """
    n = common_count(
        {
            s.name: count_from_shape(s, tuple(arrays[s.name].shape), np.dtype(arrays[s.name].dtype))
            for s in inputs
        }
    )
    batched = {s.name: arrays[s.name].ndim == len(s.shape) for s in inputs}
    return [
        {s.name: arrays[s.name][i] if batched[s.name] else arrays[s.name] for s in inputs} for i in range(n)
    ]


def common_count(counts: Mapping[str, int]) -> int:
    """The one sample count of all inputs (input name -> count); :class:`BadFile` if they differ."""
    if len(set(counts.values())) > 1:
        raise BadFile(f"inputs hold different numbers of samples: {dict(counts)}")
    return next(iter(counts.values()))


def count_from_shape(spec: TensorInfo, shape: tuple[int, ...], dtype: np.dtype) -> int:
    if dtype.kind not in "biuf":
        raise BadFile(f"array '{spec.name}' has dtype {dtype}, expected numbers")
    sample = spec.sample_shape
    if shape == sample:
        return 1
    if len(shape) == len(sample) + 1 and shape[1:] == sample:
        return shape[0]
    want = "x".join(map(str, sample)) or "a scalar"
    raise BadFile(
        f"array '{spec.name}' has shape {'x'.join(map(str, shape)) or '()'}, expected {want} (one sample) "
        f"or Nx{want} (a batch)"
    )


def assemble(
    samples: Iterable[Sample],
    inputs: Sequence[TensorInfo],
    batch_size: int,
    stats: DatasetStats,
    progress: ProgressFn,
    where: str,
    warned: set[tuple[int, int]] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Copy samples into batches of exactly ``batch_size``; count used/dropped samples in ``stats``.

    ``progress`` advances by ``batch_size`` once the consumer has taken each batch. ``warned``: the
    dataset's memory of the dropped-samples warnings it gave, ``(dropped, batch_size)``, so that a
    command reading the same data several times warns once.
    """
    buffers: dict[str, np.ndarray] | None = None
    filled = 0
    for sample in samples:
        if buffers is None:
            buffers = {s.name: np.empty((batch_size, *s.sample_shape), dtype=s.dtype) for s in inputs}
        for name, buf in buffers.items():
            buf[filled] = sample[name]
        filled += 1
        if filled == batch_size:
            stats.used += batch_size
            batch, buffers, filled = buffers, None, 0
            yield batch
            progress(batch_size)
    stats.dropped = filled
    warned = set() if warned is None else warned
    if filled and stats.used and (filled, batch_size) not in warned:
        warned.add((filled, batch_size))
        logger.warning(
            "dropped the last %d sample(s) of %s: they do not fill a batch of %d", filled, where, batch_size
        )
