"""How precision reaches a backend: trtq's :class:`~trtq.runtime.build.BuildTools`, and one build
per (backend, model, spec) that bisect, compare and pin reuse with different pins.

:class:`PrecisionTools` gives every backend the same three transforms: the CPU emulation of a
TensorRT FP16/INT8 build (:mod:`trtq.precision.emulate`), the strongly typed Q/DQ + Cast model
(:mod:`trtq.precision.export`), and a TensorRT 10 calibrator that reads a cache
(:mod:`trtq.calib.tensorrt`). The folded model and its float tensors are computed once per model,
not at every evaluation: only the pins change between them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from trtq._core.onnx_model import save_onnx
from trtq.runtime import get_backend
from trtq.runtime.build import BuildSpec
from trtq.runtime.runner import Runner


class PrecisionTools:
    """trtq's build tools (see :class:`trtq.runtime.build.BuildTools`)."""

    #: Folded models and emulation plans remembered (the most recent ones: a command works on one
    #: model and a few configs; bisect varies only the pins).
    KEEP = 4
    KEEP_PLANS = 8

    def __init__(self) -> None:
        self._prepared: OrderedDict[int, tuple[onnx.ModelProto, onnx.ModelProto, Any]] = OrderedDict()
        self._plans: OrderedDict[tuple, tuple[onnx.ModelProto, Any, Any]] = OrderedDict()

    def prepared(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, Any]:
        """``model`` folded in FP32 and its float tensors, computed once per model object (the
        folded model is remembered as already prepared too)."""
        from trtq._core.onnx_model import float_tensors
        from trtq.precision.emulate import folded

        hit = self._prepared.get(id(model))
        if hit is None or hit[0] is not model:
            base = folded(model)
            hit = (model, base, float_tensors(base))
            self._prepared[id(model)] = hit
            self._prepared[id(base)] = (base, base, hit[2])
            while len(self._prepared) > self.KEEP:
                self._prepared.popitem(last=False)
        self._prepared.move_to_end(id(model))
        return hit[1], hit[2]

    def plan(self, model: onnx.ModelProto, config: Any, amax: Mapping[str, float] | None) -> Any:
        """The emulation plan of ``model`` under ``config`` (an EmulationConfig) with ranges
        ``amax``, made once per (model, config, amax) objects: compare plans its configs here and
        the backend's build finds the same plan instead of making it again."""
        from trtq.precision.emulate import plan_emulation

        base, sites = self.prepared(model)
        key = (id(base), config, id(amax))
        hit = self._plans.get(key)
        if hit is None or hit[0] is not base or hit[1] is not amax:
            hit = (base, amax, plan_emulation(base, config, amax, sites=sites))
            self._plans[key] = hit
            while len(self._plans) > self.KEEP_PLANS:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return hit[2]

    def emulate(self, model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto:
        from trtq.precision.emulate import EmulationConfig, apply_plan

        if spec.precision == "fp32":
            return model  # pins alone change nothing in FP32
        config = EmulationConfig(spec.precision, spec.placement, spec.pins, spec.mha)
        return apply_plan(self.plan(model, config, self._amax(spec)))

    def typed_model(self, model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto:
        from trtq.precision.export import export_qdq

        amax = self._amax(spec) if spec.quantized else {}
        return export_qdq(model, amax, sorted(spec.pins), fp16=spec.fp16, fp8=spec.fp8, mha=spec.mha)

    def cache_calibrator(
        self,
        trt: Any,
        cache_path: str | os.PathLike,
        inputs: Sequence[Any],
        shapes: Mapping[str, Sequence[int]],
    ) -> Any:
        from trtq.calib.cache import read_cache
        from trtq.calib.tensorrt.factory import make_calibrator
        from trtq.calib.tensorrt.registry import calibrator_for_algorithm

        cache = read_cache(cache_path)
        specs = [replace(i, shape=tuple(shapes[i.name])) for i in inputs]
        batch = shapes[inputs[0].name][0] if inputs and shapes[inputs[0].name] else 1
        adapter = calibrator_for_algorithm(cache.algorithm)
        return make_calibrator(
            trt, adapter, None, batch_size=batch, inputs=specs, cache_path=cache_path, read_cache=True
        )

    def write_cache(self, path: str | os.PathLike, amax: Mapping[str, float]) -> None:
        from trtq.calib.cache import CalibrationCache, write_cache

        write_cache(path, CalibrationCache.from_amax(amax))

    @staticmethod
    def _amax(spec: BuildSpec) -> Mapping[str, float] | None:
        if spec.amax:
            return spec.amax  # the caller's object: plans are remembered per ranges object
        if spec.cache_path is not None:
            from trtq.calib.cache import read_cache

            return read_cache(spec.cache_path).amax()
        return None


#: The one instance commands share (it only memoises folded models).
TOOLS = PrecisionTools()


def describe_backend(name: str) -> str:
    """The backend's name as results record it: ``onnxruntime (emulated)`` where FP16/INT8 are
    emulated, the plain name where the backend builds them natively, or the backend's own
    ``label()`` (e.g. ``tensorrt (debug tensors)``: how per-layer values are read)."""
    backend = get_backend(name)
    if backend.emulated_precision:
        return f"{name} (emulated)"
    label = getattr(backend, "label", None)
    return label() if callable(label) else name


def _check_fp8(backend: str, spec: BuildSpec | None) -> None:
    """FP8 runs on emulating backends (ONNX Runtime); the TensorRT backend's FP8 build (typed
    Q/DQ model, TensorRT 11) is not wired yet."""
    if spec is not None and spec.fp8 and not get_backend(backend).emulated_precision:
        from trtq._core.errors import InputError

        raise InputError(
            f"--precision {spec.precision} runs on the emulation (--backend onnxruntime); "
            f"on TensorRT, build the model from 'precision export --fp8'"
        )


def build_runner(
    backend: str,
    model: str | os.PathLike | onnx.ModelProto,
    spec: BuildSpec | None = None,
    *,
    mark: Sequence[str] | str = (),
    threads: int | None = None,
) -> Runner:
    """Build ``model`` on the backend registered as ``backend`` (entry points included)."""
    _check_fp8(backend, spec)
    return get_backend(backend).build(model, spec or BuildSpec(), TOOLS, mark=mark, threads=threads)


@dataclass
class Candidate:
    """A built model and the ONNX it came from (what a ``--check`` command is given)."""

    runner: Runner
    source: onnx.ModelProto

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return self.runner.run(feeds)

    def save(self, path: Path) -> None:
        save_onnx(self.source, path)

    def close(self) -> None:
        self.runner.close()


def onnx_candidate(model: onnx.ModelProto, threads: int | None = None) -> Candidate:
    """``model`` as it is, run node for node on ONNX Runtime (no graph optimisations: its Q/DQ
    fusions into integer kernels change the numbers TensorRT's Q/DQ semantics give)."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    return Candidate(OnnxRuntimeRunner(model, threads=threads, optimize=False), model)


@dataclass
class ModelBuild:
    """Builds ``model`` on ``backend`` per pin set: ``build(pins)`` -> :class:`Candidate`.

    ``spec`` holds everything but the pins. The source written for a check command is the model
    the backend was given; for the emulation that is the emulated ONNX (what ONNX Runtime ran).
    """

    backend: str
    model: onnx.ModelProto
    spec: BuildSpec
    threads: int | None = None
    _cls: type[Runner] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cls = get_backend(self.backend)
        self._cls.require()  # fail now, with the backend's one-line message, not after the ranking
        _check_fp8(self.backend, self.spec)
        if self.spec.precision != "fp32" and self._cls.emulated_precision:
            TOOLS.prepared(self.model)  # fold once, not at every evaluation

    @property
    def backend_label(self) -> str:
        return describe_backend(self.backend)

    def __call__(self, pins: frozenset[str]) -> Candidate:
        spec = self.spec.with_pins(pins)
        runner = self._cls.build(self.model, spec, TOOLS, threads=self.threads)
        source = getattr(runner, "model", None)
        return Candidate(runner, source if isinstance(source, onnx.ModelProto) else self.model)
