"""TensorRT backend: build an engine from ONNX on the GPU and run batches through it.

Needs TensorRT 10.x or 11.x, cuda-python and an NVIDIA GPU; without any of them, creating the
backend raises one line naming what is missing and pointing to ``--backend onnxruntime``.
Building follows :mod:`trtq.runtime.tensorrt_build` (TensorRT 10: precision flags,
calibrator or cache, FP32 pins with precision constraints; TensorRT 11: strongly typed, INT8 via
Q/DQ ONNX). Inference reuses Polygraphy's ``TrtRunner``. After the build,
:attr:`TensorRTRunner.layers` tells which precision each engine layer actually ran in (engine
inspector, see :mod:`trtq.runtime.tensorrt_inspect`).

Marking outputs changes TensorRT's fusions (a marked tensor must survive), so a ``mark="all"``
engine is a debugging view of the model, not the deployed engine. On TensorRT >= 10.12 the
marked tensors are read as debug tensors instead (``fetch="auto"``/``"debug"``, see
:mod:`trtq.runtime.tensorrt_debug`): the engine keeps its deployed fusions and ``marked`` lists
the tensors that survived them (after the first run). ``fetch="outputs"`` forces mark-outputs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError, TrtqError, first_line
from trtq._core.onnx_model import load_onnx, np_dtype, real_inputs, save_onnx
from trtq._core.trt_import import import_tensorrt, require_gpu
from trtq.runtime import register_backend
from trtq.runtime.build import BuildSpec, BuildTools
from trtq.runtime.runner import Runner, TensorInfo
from trtq.runtime.tensorrt_build import (
    BuildSettings,
    build_engine,
    deserialize,
    engine_information,
    shapes_tuple,
)
from trtq.runtime.tensorrt_debug import DebugTensors, debug_tensors_available, fetch_mode
from trtq.runtime.tensorrt_inspect import LayerPrecision, parse_engine_information

# precision name -> (fp16 flag, int8 flag)
PRECISIONS: dict[str, tuple[bool, bool]] = {
    "fp32": (False, False),
    "fp16": (True, False),
    "int8": (False, True),
    "fp16+int8": (True, True),
}


@register_backend("tensorrt")
class TensorRTRunner(Runner):
    """Run an ONNX model as a TensorRT engine.

    Args:
        model: path to an ``.onnx`` file or a ``ModelProto``.
        mark: extra tensors to fetch: names, or ``"all"`` (every markable float activation).
        fetch: how they are read: ``"auto"`` (debug tensors on TensorRT >= 10.12, else marked
            outputs), ``"debug"`` or ``"outputs"``.
        precision: ``fp32`` | ``fp16`` | ``int8`` | ``fp16+int8``.
        int8_cache: a TensorRT calibration cache (e.g. from ``calib run`` on the CPU).
        calibrator: a live trtq calibrator (TensorRT 10 only), instead of ``int8_cache``.
        pins: ONNX node names kept in FP32.
        constraints: ``"obey"`` (build fails if a pin is impossible) or ``"prefer"`` (warns).
        shapes: full shapes for dynamic inputs, e.g. ``{"x": (1, 3, 640, 640)}``.
        timing_cache: a timing-cache file, read if present and written back.
        engine_path: also save the engine there (atomically).
        workspace_bytes: cap on the builder's workspace pool, in bytes.
        tools: the model transforms for FP16/INT8 from a cache (see :mod:`trtq.runtime.build`).
    """

    name = "tensorrt"
    native_calibration = True

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        *,
        mark: Sequence[str] | str = (),
        precision: str = "fp32",
        int8_cache: str | os.PathLike | None = None,
        calibrator: Any = None,
        pins: Sequence[str] = (),
        constraints: str = "obey",
        shapes: Mapping[str, Sequence[int]] | None = None,
        timing_cache: str | os.PathLike | None = None,
        engine_path: str | os.PathLike | None = None,
        workspace_bytes: int | None = None,
        tools: BuildTools | None = None,
        fetch: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
        self.trt = import_tensorrt()
        require_gpu()
        fp16, int8 = PRECISIONS[precision]
        self.fetch = fetch_mode(self.trt, fetch)
        if isinstance(model, onnx.ModelProto):
            proto, model_file = model, None
        else:
            proto, model_file = load_onnx(model, load_external_data=False), Path(model)
        self.model = proto
        self.precision = precision
        settings = BuildSettings(
            fp16=fp16,
            int8=int8,
            pins=tuple(pins),
            constraints=constraints,
            mark="all" if mark == "all" else tuple(mark),
            debug=self.fetch == "debug",
            shapes=shapes_tuple(shapes),
            timing_cache=Path(timing_cache) if timing_cache else None,
            engine_path=Path(engine_path) if engine_path else None,
            workspace_bytes=workspace_bytes,
        )
        with contextlib.ExitStack() as stack:
            if model_file is None:  # TensorRT parses a file: write the ModelProto to a temporary one
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="trtq-trt-"))
                model_file = Path(tmp) / "model.onnx"
                save_onnx(proto, model_file)
            self.built = build_engine(
                self.trt, model_file, settings, calibrator=calibrator, int8_cache=int8_cache, tools=tools
            )
        self.engine, self._runtime = deserialize(self.trt, self.built.engine_bytes)
        self._marked = list(self.built.marks.marked)
        from polygraphy.backend.trt import TrtRunner  # reuse Polygraphy's buffers and execution

        self._runner = TrtRunner(self.engine)
        self._runner.activate()
        self._debug = None
        if self.fetch == "debug" and self._marked:  # our listener on Polygraphy's context
            self._debug = DebugTensors(self.trt, self._marked)
            self._debug.attach(self._runner.context)
        self._inputs = [
            replace(i, shape=tuple(self.built.shapes.get(i.name, ()))) for i in real_inputs(proto)
        ]
        self._outputs = [
            TensorInfo(o.name, (), np_dtype(o.type.tensor_type.elem_type)) for o in proto.graph.output
        ]
        self._fetchable = {o.name for o in proto.graph.output} | set(self._marked)

    @property
    def marked(self) -> list[str]:
        """The extra tensors ``run`` returns; with debug tensors, those the engine reported."""
        return self._debug.marked if self._debug is not None else list(self._marked)

    @classmethod
    def label(cls) -> str:
        """The backend as results record it: how per-layer values are read on this TensorRT."""
        try:
            trt = import_tensorrt()
        except TrtqError:
            return cls.name
        how = "debug tensors" if debug_tensors_available(trt) else "marked outputs"
        return f"{cls.name} ({how})"

    @classmethod
    def require(cls) -> None:
        import_tensorrt()
        require_gpu()

    @classmethod
    def build(
        cls,
        model: str | os.PathLike | onnx.ModelProto,
        spec: BuildSpec | None = None,
        tools: BuildTools | None = None,
        *,
        mark: Sequence[str] | str = (),
        threads: int | None = None,
        fetch: str = "auto",
    ) -> TensorRTRunner:
        """A real engine: TensorRT 10 with flags, the cache and pins under precision constraints;
        TensorRT 11 strongly typed from ``tools.typed_model``. ``spec.amax`` without a cache is
        written to a temporary cache first. ``threads`` does not apply; ``fetch`` as in the class."""
        spec = spec or BuildSpec()
        cache = spec.cache_path if spec.int8 else None
        with contextlib.ExitStack() as stack:
            if spec.int8 and cache is None and spec.amax:
                if tools is None:
                    raise InputError("INT8 on TensorRT needs a calibration cache (--cache)")
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="trtq-trt-cache-"))
                cache = Path(tmp) / "calib.cache"
                tools.write_cache(cache, spec.amax)
            return cls(
                model,
                mark=mark,
                precision=spec.precision,
                int8_cache=cache,
                pins=tuple(sorted(spec.pins)),
                constraints=spec.constraints,
                shapes=spec.shapes,
                tools=tools,
                fetch=fetch,
            )

    @functools.cached_property
    def layers(self) -> list[LayerPrecision]:
        """Per engine layer, from TensorRT's engine inspector; read on first use (each read asks
        the inspector for the whole engine)."""
        return parse_engine_information(engine_information(self.trt, self.engine))

    def layer_precisions(self) -> list[dict]:
        """Per engine layer: name, layer type, precision actually used, ONNX nodes it came from."""
        return [info.as_dict() for info in self.layers]

    def _run_impl(self, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        feed = {t.name: np.ascontiguousarray(feeds[t.name], dtype=t.dtype) for t in self._inputs}

        def infer() -> Mapping[str, Any]:
            try:
                return self._runner.infer(feed)
            except Exception as exc:
                raise TrtqError(f"TensorRT failed to run the engine: {first_line(exc)}") from exc

        if self._debug is not None:  # tensors fused away are left out
            return self._debug.run(infer, outputs)
        result = infer()
        return {n: np.asarray(result[n]) for n in outputs}

    def _close_impl(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()
        self._runner = None
        self._debug = None
        self.engine = None
