"""Per-tensor histograms of |x|: collected batch by batch, merged exactly, saved as ``.npz``.

This is the *collecting* half of calibration (the *deciding* half is :mod:`trtq.calib.methods`).

Conventions:
- Each tensor has ``num_bins`` (default 2048) equal bins over ``[0, upper]``: bin ``j`` counts
  ``j * w <= |x| < (j + 1) * w`` with ``w = upper / num_bins``; edges are
  ``np.linspace(0, upper, num_bins + 1)``.
- ``upper`` is the smallest power of two strictly above the largest finite |x| seen (0 while
  only zeros were seen). When a batch exceeds it, pairs of bins merge and ``upper`` doubles:
  no count is lost and the histogram is *exactly* the one a single pass with the final range
  would give. So results do not depend on batch order, batch size or sharding (TensorRT's own
  calibrator starts from the first batch's max and does depend on order).
  The price: the data occupies between half and all of the bins.
- NaN/Inf values are counted in ``nonfinite`` and never binned; so are mask fills, values with
  |x| >= 2^126 such as ``torch.finfo(float32).min`` in an attention mask (``mask_fill``): no
  activation holds such values, and binning one would stretch the range by 10^37.
- Values are binned as float32 (float16/float64 tensors are converted first).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtq._core.atomic import atomic_path
from trtq._core.errors import InputError
from trtq.calib import _kernels

FORMAT_VERSION = 1
DEFAULT_BINS = 2048


@dataclass
class TensorHistogram:
    """One tensor's histogram: ``counts[j]`` over ``edges[j] <= |x| < edges[j+1]``."""

    name: str
    counts: np.ndarray  # int64 [num_bins]
    upper: float
    max_abs: float
    nonfinite: int
    mask_fill: int = 0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.upper, self.counts.shape[0] + 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


class HistogramSet:
    """Histograms of |x| for a fixed list of tensors; mergeable, serialisable, order-independent.

    Args:
        names: tensor names, in the order they will be reported (topological).
        num_bins: bins per tensor (even; 2048 as in TensorRT).
    """

    def __init__(self, names: Sequence[str], num_bins: int = DEFAULT_BINS) -> None:
        if num_bins < 2 or num_bins % 2:
            raise InputError(f"num_bins must be an even number >= 2, got {num_bins}")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise InputError("duplicate tensor names in histogram set")
        self.num_bins = num_bins
        self.counts = np.zeros((len(self.names), num_bins), np.int64)
        self.upper = np.zeros(len(self.names), np.float64)
        self._stats = np.zeros((len(self.names), 3), np.float64)  # (max_abs, nonfinite, mask_fill)
        self.samples = 0  # number of samples (images) collected, for resume and reports
        self.sources: list[str] = []  # optional: the files consumed, in order

    # -- collecting ----------------------------------------------------------------------------
    def collect(
        self, tensors: Mapping[str, np.ndarray], *, samples: int = 0, executor: Executor | None = None
    ) -> None:
        """Add one batch of tensors (any subset of :attr:`names`; unknown names are ignored).

        With an ``executor`` (a thread pool) tensors are histogrammed in parallel; the kernel
        releases the GIL. Each tensor's state is touched by one task only, and this call
        returns when all are done.
        """
        jobs = [(self.index[n], a) for n, a in tensors.items() if n in self.index]
        if executor is None:
            for i, a in jobs:
                self._collect_one(i, a)
        else:
            for fut in [executor.submit(self._collect_one, i, a) for i, a in jobs]:
                fut.result()
        self.samples += samples

    def _collect_one(self, i: int, array: np.ndarray) -> None:
        # Activations are binned as float32 (TensorRT calibrates in FP32); float16/float64
        # tensors are converted.
        flat = np.ravel(array)
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        self.upper[i] = _kernels.accumulate_abs(flat, self.counts[i], self.upper[i], self._stats[i])

    # -- combining -----------------------------------------------------------------------------
    def merge(self, other: HistogramSet) -> HistogramSet:
        """Add ``other``'s counts into this set (in place, exact) and return ``self``.

        Both sets must have the same ``num_bins``; tensors only in ``other`` are added.
        """
        if other.num_bins != self.num_bins:
            raise InputError(f"cannot merge histograms with {other.num_bins} bins into {self.num_bins} bins")
        for name in other.names:
            if name not in self.index:
                self._add_name(name)
        for j, name in enumerate(other.names):
            i = self.index[name]
            top = max(self.upper[i], other.upper[j])
            mine = _kernels.rebinned(self.counts[i], self.upper[i], top)
            theirs = _kernels.rebinned(other.counts[j], other.upper[j], top)
            self.counts[i] = mine + theirs
            self.upper[i] = top
            self._stats[i, 0] = max(self._stats[i, 0], other._stats[j, 0])
            self._stats[i, 1:] += other._stats[j, 1:]
        self.samples += other.samples
        self.sources += other.sources
        return self

    def _add_name(self, name: str) -> None:
        self.index[name] = len(self.names)
        self.names.append(name)
        self.counts = np.vstack([self.counts, np.zeros((1, self.num_bins), np.int64)])
        self.upper = np.append(self.upper, 0.0)
        self._stats = np.vstack([self._stats, np.zeros((1, 3))])

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __getitem__(self, name: str) -> TensorHistogram:
        i = self.index[name]
        st = self._stats[i]
        return TensorHistogram(
            name, self.counts[i], float(self.upper[i]), float(st[0]), int(st[1]), int(st[2])
        )

    def __iter__(self):
        return (self[n] for n in self.names)

    def max_abs(self, name: str) -> float:
        return float(self._stats[self.index[name], 0])

    def nonfinite(self, name: str) -> int:
        return int(self._stats[self.index[name], 1])

    def mask_fill(self, name: str) -> int:
        """How many values of ``name`` were mask fills (|x| >= 2^126), counted and not binned."""
        return int(self._stats[self.index[name], 2])

    def seen(self) -> list[str]:
        """Names of tensors that received at least one finite value."""
        return [n for i, n in enumerate(self.names) if self.counts[i].any()]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` atomically (format in docs/SCHEMA.md)."""
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    format=np.int64(FORMAT_VERSION),
                    names=np.array(self.names, dtype=str),
                    counts=self.counts,
                    upper=self.upper,
                    max_abs=self._stats[:, 0],
                    nonfinite=self._stats[:, 1].astype(np.int64),
                    mask_fill=self._stats[:, 2].astype(np.int64),
                    num_bins=np.int64(self.num_bins),
                    samples=np.int64(self.samples),
                    sources=np.array(self.sources, dtype=str),
                )

    @classmethod
    def load(cls, path: str | os.PathLike) -> HistogramSet:
        """Read an ``.npz`` written by :meth:`save`; bad files raise :class:`InputError`."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such histogram file")
        try:
            with np.load(p, allow_pickle=False) as z:
                if int(z["format"]) != FORMAT_VERSION:
                    raise InputError(f"{p}: histogram format {int(z['format'])} is not supported")
                hs = cls([str(n) for n in z["names"]], int(z["num_bins"]))
                hs.counts[...] = z["counts"]
                hs.upper[...] = z["upper"]
                hs._stats[:, 0] = z["max_abs"]
                hs._stats[:, 1] = z["nonfinite"]
                if "mask_fill" in z.files:  # files from before mask fills were counted have none
                    hs._stats[:, 2] = z["mask_fill"]
                hs.samples = int(z["samples"])
                hs.sources = [str(s) for s in z["sources"]]
        except InputError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc):  # numpy's advice to load it unsafely is not ours to give
                raise InputError(f"{p}: not a trtq histogram file (not a .npz of arrays)") from exc
            raise InputError(f"{p}: not a trtq histogram file ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:
            raise InputError(f"{p}: not a trtq histogram file ({type(exc).__name__}: {exc})") from exc
        if not (np.isfinite(hs.counts).all() and (hs.counts >= 0).all()):
            raise InputError(f"{p}: corrupt histogram file: counts must be finite and >= 0")
        if not (np.isfinite(hs.upper).all() and (hs.upper >= 0).all()):
            raise InputError(f"{p}: corrupt histogram file: ranges must be finite and >= 0")
        return hs

    @classmethod
    def merged(cls, sets: Iterable[HistogramSet]) -> HistogramSet:
        """A new set holding the exact sum of ``sets``."""
        sets = list(sets)
        if not sets:
            raise InputError("nothing to merge")
        out = cls(sets[0].names, sets[0].num_bins)
        for s in sets:
            out.merge(s)
        return out
