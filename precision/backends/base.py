"""The backend protocol: load a model, list its tensors, run a batch with chosen outputs.

A backend is a context manager. ``run(feeds, outputs)`` takes numpy arrays keyed by input name
and returns numpy arrays keyed by output name. Which extra (non-graph-output) tensors may be
fetched is fixed when the backend is created (``mark=``), because both ONNX Runtime sessions and
TensorRT engines decide their outputs at build time.

Subclasses set ``_inputs``/``_outputs`` (or override ``_inputs_impl``/``_outputs_impl``) and
``_fetchable`` (the names ``run`` may return; ``None``: not checked), implement ``_run_impl`` (and
optionally ``_close_impl``); the public methods check state, inputs and outputs once, here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trtq._core.errors import InputError


@dataclass(frozen=True)
class TensorInfo:
    """A model tensor: ``shape`` holds ints for static dims and ``None`` (or a name) for dynamic."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype


class Backend:
    """Base class of all backends. Use as a context manager or call :meth:`close`."""

    name: ClassVar[str] = "base"
    _inputs: Sequence[TensorInfo] = ()
    _outputs: Sequence[TensorInfo] = ()
    _fetchable: Collection[str] | None = None  # names run() may return; None: not checked

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._close_impl()

    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs_impl())

    def outputs(self) -> list[TensorInfo]:
        """The model's own outputs (not the extra marked tensors)."""
        return list(self._outputs_impl())

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch. ``outputs=None`` returns the model's own outputs."""
        expected = {t.name: t for t in self._inputs_impl()}
        missing = [n for n in expected if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {missing}; the model expects {list(expected)}")
        extra = [n for n in feeds if n not in expected]
        if extra:
            raise InputError(f"unknown input(s) {extra}; the model expects {list(expected)}")
        names = list(outputs) if outputs is not None else [t.name for t in self._outputs_impl()]
        if self._fetchable is not None:
            unknown = [n for n in names if n not in self._fetchable]
            if unknown:
                raise InputError(f"tensor(s) {unknown[:5]} were not marked when the backend was created")
        return self._run_impl(feeds, names)

    # -- hooks ---------------------------------------------------------------------------------
    def _inputs_impl(self) -> Sequence[TensorInfo]:
        return self._inputs

    def _outputs_impl(self) -> Sequence[TensorInfo]:
        return self._outputs

    def _run_impl(self, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass
