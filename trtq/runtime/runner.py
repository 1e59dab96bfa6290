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

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo  # the one tensor metadata type; re-exported here
from trtq.runtime.build import BuildSpec, BuildTools

__all__ = ["Runner", "TensorInfo"]


class Runner:
    """Base class of all backends. Use as a context manager or call :meth:`close`.

    A backend is a Runner subclass registered by name (:func:`trtq.runtime.register_backend` or
    the ``trtq.backends`` entry-point group). :meth:`build` is its build step: every command that
    takes ``--backend NAME`` builds through it.
    """

    name: ClassVar[str] = "base"
    #: True when the backend calibrates INT8 itself from a data stream (TensorRT 10's
    #: calibrators); others are calibrated by trtq's histograms of their FP32 activations.
    native_calibration: ClassVar[bool] = False
    #: True when FP16/INT8 builds are emulated (rounding written into the ONNX it runs), not native.
    emulated_precision: ClassVar[bool] = False
    _inputs: Sequence[TensorInfo] = ()
    _outputs: Sequence[TensorInfo] = ()
    _fetchable: Collection[str] | None = None  # names run() may return; None: not checked

    @classmethod
    def require(cls) -> None:
        """Raise :class:`~trtq._core.errors.MissingDependencyError` (one line) when this backend
        cannot run here; called before long work (e.g. bisect's ranking) so it fails at once."""

    @classmethod
    def build(
        cls,
        model: str | os.PathLike | onnx.ModelProto,
        spec: BuildSpec | None = None,
        tools: BuildTools | None = None,
        *,
        mark: Sequence[str] | str = (),
        threads: int | None = None,
    ) -> Runner:
        """Build ``model`` as ``spec`` says and return a runner for it (default: FP32 only).

        ``mark`` names extra tensors ``run`` may return (``"all"``: every float activation);
        ``tools`` carries the precision transforms of the rooms above (see :mod:`trtq.runtime.build`).
        """
        spec = spec or BuildSpec()
        if spec.precision != "fp32" or spec.pins:
            raise InputError(f"backend '{cls.name}' builds FP32 only, not {spec.precision}")
        return cls(model, mark=mark)  # type: ignore[call-arg]

    def __enter__(self) -> Runner:
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
