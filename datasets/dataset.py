"""A dataset over a folder: ordered, prefetched, fixed-size batches and a record of bad files."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.tensors import TensorInfo
from trtq.datasets.bad_file import BadFile
from trtq.datasets.batching import DatasetStats, Sample, assemble
from trtq.datasets.input_spec import static_inputs
from trtq.datasets.prefetch import default_workers, ordered_map

logger = logging.getLogger(__name__)


class Source(Protocol):
    """A kind of folder (images, tensors): its files, work items and how to load one."""

    kind: str
    files: list[Path]
    open_skips: list[tuple[str, str]]

    def __len__(self) -> int: ...
    def items(self, batch_size: int) -> Sequence[Any]: ...
    def samples_per_item(self) -> float: ...
    def item_file(self, item: Any) -> Path: ...
    def load(self, item: Any) -> list[Sample]: ...


class Dataset:
    """Samples from a folder, batched for one model. Made by :func:`~trtq.datasets.open_dataset`.

    ``len(ds)`` is the number of candidate samples (image files, or samples counted from tensor
    headers), after ``limit``; bad files found while reading are skipped (or raise with
    ``strict``). The dataset streams: at most ``prefetch`` batches are decoded ahead.
    """

    def __init__(
        self,
        root: Path,
        source: Source,
        inputs: Sequence[TensorInfo],
        *,
        strict: bool = False,
        workers: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.inputs = static_inputs(inputs)
        self.strict = strict
        self.workers = workers
        self._source = source
        self._skips: dict[str, str] = {}
        # skip warnings wait for the first usable sample: when none comes, the one error line
        # (naming the count and the first file) says it all
        self._pending: list[tuple[str, str]] = []
        self._usable = False
        self._stats = DatasetStats()
        self._warned: set[tuple[int, int]] = set()  # dropped-samples warnings given (assemble)
        for file, reason in source.open_skips:
            self._skip(file, reason)
        if len(source) == 0:
            raise self._nothing_usable()

    @property
    def kind(self) -> str:
        """``"images"`` or ``"tensors"``."""
        return self._source.kind

    @property
    def files(self) -> list[Path]:
        """The files that will be read, in reading order (after shuffle and limit)."""
        return list(self._source.files)

    def __len__(self) -> int:
        return len(self._source)

    @property
    def stats(self) -> DatasetStats:
        s = self._stats
        return DatasetStats(s.used, len(self._skips), list(self._skips.items()), s.dropped)

    def batches(
        self,
        batch_size: int | None = None,
        *,
        prefetch: int = 4,
        workers: int | None = None,
        progress: ProgressFn = null_progress,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{input_name: array}`` batches of exactly ``batch_size`` samples, in file order.

        ``batch_size`` defaults to the inputs' batch dim. Files are decoded on ``workers`` threads
        (default: ``self.workers``, else the CPU count, at most 4; 0 = in the calling thread), at
        most ``max(prefetch, 1)`` batches ahead of the consumer; the output does not depend on
        ``workers`` or ``prefetch``. ``progress`` is told the
        total once, then advanced by 1 per sample the consumer has taken. Raises
        :class:`InputError` at the end if no full batch could be made.
        """
        bs = _batch_size(batch_size, self.inputs, prefetch)
        if workers is None:
            workers = self.workers if self.workers is not None else default_workers()
        if workers < 0:
            raise InputError(f"workers must be >= 0, got {workers}")
        window = max(1, math.ceil(max(prefetch, 1) * bs / max(self._source.samples_per_item(), 1.0)))
        return self._batches(bs, window, workers, progress)

    def _batches(
        self, bs: int, window: int, workers: int, progress: ProgressFn
    ) -> Iterator[dict[str, np.ndarray]]:
        self._stats = DatasetStats()
        progress(0, total=len(self) - len(self) % bs, description=f"reading {self.kind}")
        results = ordered_map(self._load, self._source.items(bs), workers=workers, window=window)
        samples = (s for item, loaded in results for s in self._accept(item, loaded))
        yield from assemble(samples, self.inputs, bs, self._stats, progress, str(self.root), self._warned)
        if self._stats.used == 0:
            if self._stats.dropped:
                raise InputError(
                    f"only {self._stats.dropped} usable sample(s) in {self.root}, fewer than the batch size {bs}"
                )
            raise self._nothing_usable()

    def _load(self, item: Any) -> tuple[Any, list[Sample] | str]:
        """Runs on a worker thread: the samples, or the reason the file is bad."""
        try:
            return item, self._source.load(item)
        except BadFile as exc:
            return item, str(exc)

    def _accept(self, item: Any, loaded: list[Sample] | str) -> list[Sample]:
        if isinstance(loaded, str):
            self._skip(str(self._source.item_file(item)), loaded)
            return []
        if loaded and not self._usable:
            self._usable = True
            for file, reason in self._pending:
                logger.warning("skipped %s: %s", file, reason)
            self._pending.clear()
        return loaded

    def _skip(self, file: str, reason: str) -> None:
        if self.strict:
            raise InputError(f"{file}: {reason} (without --strict it would be skipped)")
        if file not in self._skips:
            self._skips[file] = reason
            if self._usable:
                logger.warning("skipped %s: %s", file, reason)
            else:
                self._pending.append((file, reason))

    def _nothing_usable(self) -> InputError:
        if self._skips:
            file, reason = next(iter(self._skips.items()))
            return InputError(
                f"no usable {self.kind} in {self.root}: all {len(self._skips)} file(s) were skipped "
                f"(first: {file}: {reason})"
            )
        return InputError(f"no usable {self.kind} in {self.root}")


def _batch_size(batch_size: int | None, inputs: Sequence[TensorInfo], prefetch: int = 0) -> int:
    """The batch size asked for (default: the inputs' batch dim), after checking it and ``prefetch``."""
    bs = inputs[0].shape[0] if batch_size is None else int(batch_size)
    if bs < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if prefetch < 0:
        raise InputError(f"prefetch must be >= 0, got {prefetch}")
    return bs
