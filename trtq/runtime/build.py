"""The build step: what a backend is asked to build, and the model transforms it may need.

A backend turns ``(model, BuildSpec)`` into a :class:`~trtq.runtime.runner.Runner` through its
``build`` class method (Polygraphy's loader → runner split: the spec is the loader's settings, the
runner runs what was built). ``BuildSpec`` says *what* to build; *how* precision is written into
an ONNX model (the FP16/INT8 emulation, the Q/DQ + Cast export for strongly typed TensorRT, a
TensorRT calibrator made from a cache) belongs to the rooms above this one, which hand those
transforms to the backend as a :class:`BuildTools` object. The runtime never imports calib or
precision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import onnx

from trtq._core.errors import InputError

#: Precision names: FP32 only, FP16 where allowed, INT8 where allowed (weights and activations at
#: the layers the placement quantizes), both; FP8 E4M3 where INT8 would be (Q/DQ, scale = amax /
#: 112, per-channel weights), alone or with FP16 (``fp8+fp16``). FP8 exists only as explicit quantization (TensorRT 11
#: typed models, or the emulation); TensorRT 10's weak-typing build path does not take it.
PRECISIONS = ("fp32", "fp16", "int8", "fp16+int8", "fp8", "fp8+fp16")


def needs_ranges(precision: str) -> bool:
    """Whether ``precision`` quantizes (INT8 or FP8), i.e. needs calibrated ranges."""
    return "int8" in precision or "fp8" in precision


class PrecisionFlags:
    """What a precision name such as ``fp16+int8`` turns on (shared by every settings type that
    holds a ``precision``)."""

    precision: str

    @property
    def fp16(self) -> bool:
        return "fp16" in self.precision

    @property
    def int8(self) -> bool:
        return "int8" in self.precision

    @property
    def fp8(self) -> bool:
        return "fp8" in self.precision

    @property
    def quantized(self) -> bool:
        """INT8 or FP8: needs calibrated ranges (amax; FP8 scale = amax / 112)."""
        return self.int8 or self.fp8


@dataclass(frozen=True)
class BuildSpec(PrecisionFlags):
    """What to build.

    ``precision`` is one of :data:`PRECISIONS`; ``placement`` (``explicit`` | ``implicit``) says
    where INT8 is placed when the backend emulates it; ``pins`` are ONNX node names kept in FP32;
    ``amax`` the per-tensor INT8 ranges (amax, not scale: scale = amax / 127) and ``cache_path`` a
    TensorRT calibration cache holding them; ``shapes`` full input shapes for dynamic dims;
    ``constraints`` ``obey`` | ``prefer`` (TensorRT 10 precision constraints for the pins);
    ``mha`` (``fp16`` | ``int8``) whether an emulated build quantizes the attention blocks'
    matrix products.
    """

    precision: str = "fp32"
    placement: str = "explicit"
    pins: frozenset[str] = frozenset()
    amax: Mapping[str, float] | None = field(default=None, compare=False, hash=False)
    cache_path: str | os.PathLike | None = None
    shapes: Mapping[str, Sequence[int]] | None = field(default=None, compare=False, hash=False)
    constraints: str = "obey"
    mha: str = "fp16"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        object.__setattr__(self, "pins", frozenset(self.pins))

    def with_pins(self, pins: frozenset[str] | Sequence[str]) -> BuildSpec:
        """The same spec with other FP32 pins (what bisect varies between evaluations)."""
        from dataclasses import replace

        return replace(self, pins=frozenset(pins))


class BuildTools(Protocol):
    """Model transforms a backend may need, supplied by the rooms above the runtime.

    ``emulate`` returns the model with FP16 rounding and INT8 Q/DQ placed as TensorRT would build
    it (for backends that run ONNX as given, e.g. ONNX Runtime). ``typed_model`` returns the
    strongly typed model (Q/DQ + FP16 Casts, pins in FP32) that TensorRT 11 builds.
    ``cache_calibrator(trt, cache_path, inputs, shapes)`` returns a TensorRT 10 calibrator that
    only reads ``cache_path``; ``write_cache(path, amax)`` writes ranges as a TensorRT cache (for
    builds given ``amax`` without a cache).
    """

    def emulate(self, model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto: ...

    def typed_model(self, model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto: ...

    def cache_calibrator(
        self,
        trt: Any,
        cache_path: str | os.PathLike,
        inputs: Sequence[Any],
        shapes: Mapping[str, Sequence[int]],
    ) -> Any: ...

    def write_cache(self, path: str | os.PathLike, amax: Mapping[str, float]) -> None: ...
