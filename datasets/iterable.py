"""Batches from a user's Python iterable (e.g. for the TensorRT calibrator helpers).

Each item of the iterable is a dict ``{input_name: array}`` holding **one sample or a batch of
samples**, told apart by rank exactly as for tensor folders: an array with the input's rank is a
batch along axis 0 (any count), one with rank one less is a single sample. Items are re-batched
to exactly ``batch_size``. Anything that is not a dict of fitting numeric arrays raises
:class:`InputError` naming the item's index (user code, so never skipped). Arrays may be numpy
arrays or anything ``np.asarray`` accepts (lists, CPU torch tensors).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.tensors import TensorInfo
from trtq.datasets.bad_file import BadFile
from trtq.datasets.batching import DatasetStats, Sample, assemble, split_samples
from trtq.datasets.dataset import _batch_size
from trtq.datasets.input_spec import static_inputs
from trtq.datasets.prefetch import read_ahead


class IterableDataset:
    """The :class:`~trtq.datasets.dataset.Dataset` interface over an iterable of dicts."""

    kind = "iterable"

    def __init__(
        self, iterable: Iterable[Mapping[str, Any]], inputs: Sequence[TensorInfo], length: int | None = None
    ):
        self.inputs = static_inputs(inputs)
        self._iterable = iterable
        self._length = length
        self._stats = DatasetStats()
        self._warned: set[tuple[int, int]] = set()  # dropped-samples warnings given (assemble)

    @property
    def files(self) -> list:
        return []

    def __len__(self) -> int:
        """The ``length`` given to :func:`from_iterable` (samples); ``TypeError`` if none was."""
        if self._length is None:
            raise TypeError("the length of an iterable dataset is unknown (pass length= to from_iterable)")
        return self._length

    @property
    def stats(self) -> DatasetStats:
        s = self._stats
        return DatasetStats(s.used, 0, [], s.dropped)

    def batches(
        self,
        batch_size: int | None = None,
        *,
        prefetch: int = 4,
        workers: int | None = None,
        progress: ProgressFn = null_progress,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield batches of exactly ``batch_size`` samples in the iterable's order.

        The iterable is read on one background thread, at most ``prefetch`` items ahead
        (0: in the calling thread); ``workers`` is accepted for interface compatibility and unused.
        """
        return self._batches(_batch_size(batch_size, self.inputs, prefetch), prefetch, progress)

    def _batches(self, bs: int, prefetch: int, progress: ProgressFn) -> Iterator[dict[str, np.ndarray]]:
        self._stats = DatasetStats()
        total = None if self._length is None else self._length - self._length % bs
        progress(0, total=total, description="reading samples")
        items = read_ahead(self._iterable, window=prefetch)
        samples = (s for index, item in enumerate(items) for s in self._split(index, item))
        yield from assemble(samples, self.inputs, bs, self._stats, progress, "the iterable", self._warned)
        if self._stats.used == 0:
            if self._stats.dropped:
                raise InputError(
                    f"the iterable gave only {self._stats.dropped} sample(s), fewer than the batch size {bs}"
                )
            raise InputError("the iterable yielded no samples (a generator can be read only once)")

    def _split(self, index: int, item: Any) -> list[Sample]:
        if not isinstance(item, Mapping):
            raise InputError(
                f"item {index} of the iterable is a {type(item).__name__}, expected a dict keyed by input name"
            )
        names = [s.name for s in self.inputs]
        missing = [n for n in names if n not in item]
        extra = [k for k in item if k not in names]
        if missing or extra:
            raise InputError(
                f"item {index} of the iterable has keys {list(item)}; the model's inputs are {names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "")
            )
        try:
            return split_samples({n: np.asarray(item[n]) for n in names}, self.inputs)
        except BadFile as exc:
            raise InputError(f"item {index} of the iterable: {exc}") from exc


def from_iterable(
    iterable: Iterable[Mapping[str, Any]], inputs: Sequence[TensorInfo], *, length: int | None = None
) -> IterableDataset:
    """Wrap an iterable of ``{input_name: array}`` dicts (one sample or a batch each; see the
    module docstring). ``length`` (samples), if known, sizes progress bars and ``len()``."""
    if not inputs:
        raise InputError("from_iterable needs at least one input")
    return IterableDataset(iterable, inputs, length)
