"""Build a TensorRT engine from ONNX: TensorRT 10 (weakly typed, flags and calibrators) or
TensorRT 11 (strongly typed, INT8 through a Q/DQ ONNX). The path is picked from
``tensorrt.__version__`` through :data:`BUILD_PATHS`.

TensorRT 10.x: FP16/INT8 builder flags; INT8 scales from a live calibrator or an existing cache
(a cache-only calibrator of the cache's algorithm, made by ``BuildTools.cache_calibrator``); pinned layers kept in FP32 with
``layer.precision``/``set_output_type`` and OBEY_ (default) or PREFER_PRECISION_CONSTRAINTS;
dynamic inputs get one profile at the given shapes, also used as the calibration profile.

TensorRT 11.x: no precision flags, calibrators or ``layer.precision``. FP16 and INT8 go through
``BuildTools.typed_model`` (trtq's own: the Q/DQ export of :mod:`trtq.precision.export`, amax from
the calibration cache; pinned nodes stay unquantized and FP32) and a STRONGLY_TYPED network.

Both: optional mark-all/mark-some outputs (or debug tensors, fusions kept), timing cache read and written back, DETAILED
profiling verbosity for the engine inspector, engine written atomically.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from trtq._core.atomic import atomic_write_bytes, outside_group
from trtq._core.errors import InputError, MissingDependencyError, TrtqError
from trtq._core.onnx_model import load_onnx, save_onnx
from trtq._core.tensors import TensorInfo
from trtq._core.trt_import import CPU_HINT, targets, trt_major
from trtq.runtime.build import BuildSpec, BuildTools
from trtq.runtime.tensorrt_network import (
    MarkResult,
    add_fixed_profile,
    make_logger,
    mark_debug_tensors,
    mark_outputs,
    network_flags,
    network_inputs,
    parse_onnx,
    pin_layers,
    resolve_shapes,
)

log = logging.getLogger(__name__)

CONSTRAINTS = {"obey": "OBEY_PRECISION_CONSTRAINTS", "prefer": "PREFER_PRECISION_CONSTRAINTS"}


@dataclass(frozen=True)
class BuildSettings:
    """What to build. ``shapes`` fixes dynamic inputs (name -> full shape, batch first);
    ``mark`` is ``"all"`` or tensor names to read back: as outputs, or as debug tensors when
    ``debug`` (TensorRT >= 10.12, fusions kept; see :mod:`trtq.runtime.tensorrt_debug`); ``pins`` are ONNX node names kept in
    FP32; ``constraints`` is ``"obey"`` or ``"prefer"``; ``workspace_bytes`` caps the workspace
    pool (bytes)."""

    fp16: bool = False
    int8: bool = False
    pins: tuple[str, ...] = ()
    constraints: str = "obey"
    mark: tuple[str, ...] | str = ()
    debug: bool = False
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    timing_cache: Path | None = None
    engine_path: Path | None = None
    workspace_bytes: int | None = None


@dataclass
class BuiltEngine:
    """A serialized engine and what went into it."""

    engine_bytes: bytes
    trt_version: str
    build_path: str  # "tensorrt10-implicit" | "tensorrt11-explicit"
    inputs: list[TensorInfo]
    shapes: dict[str, tuple[int, ...]]
    marks: MarkResult = field(default_factory=MarkResult)
    pinned_layers: list[str] = field(default_factory=list)
    calibrator: Any = None


def attach_timing_cache(config: Any, path: Path | None) -> None:
    """Load ``path`` (or start empty) as the config's timing cache."""
    if path is None:
        return
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    timing = config.create_timing_cache(data)
    config.set_timing_cache(timing, False)


def save_timing_cache(config: Any, path: Path | None) -> None:
    """Write the config's timing cache back to ``path`` atomically. It is kept when the command
    fails later (outside its :func:`~trtq._core.atomic.output_group`): its timings stay valid."""
    if path is None:
        return
    timing = config.get_timing_cache()
    if timing is not None:
        with outside_group():
            atomic_write_bytes(path, bytes(memoryview(timing.serialize())))


def _node_outputs(model_path: Path) -> dict[str, list[str]]:
    model = load_onnx(model_path, load_external_data=False)
    return {n.name: [o for o in n.output if o] for n in model.graph.node if n.name}


def _build_failed(model_path: Path, logger: Any) -> TrtqError:
    reason = logger.last_error("no reason given (run with --debug)").strip().splitlines()[0]
    return TrtqError(f"{model_path}: TensorRT could not build the engine: {reason}")


def _create(factory: Callable[[Any], Any], logger: Any, what: str) -> Any:
    """``trt.Builder(logger)`` / ``trt.Runtime(logger)``; TensorRT returns null (a TypeError from
    pybind11) when its native library cannot start, e.g. without a usable GPU or driver."""
    try:
        return factory(logger)
    except TypeError as exc:
        reason = logger.last_error(str(exc))
        raise MissingDependencyError(f"TensorRT could not create a {what} ({reason}); {CPU_HINT}") from exc


def _start(trt: ModuleType, model_path: Path, settings: BuildSettings, *, strongly_typed: bool):
    logger = make_logger(trt)
    builder = _create(trt.Builder, logger, "builder")
    network = builder.create_network(network_flags(trt, strongly_typed=strongly_typed))
    parser = parse_onnx(trt, network, logger, model_path)
    inputs = network_inputs(trt, network)
    shapes = resolve_shapes(inputs, dict(settings.shapes))
    marks = MarkResult()
    if settings.mark:
        mark = mark_debug_tensors if settings.debug else mark_outputs
        marks = mark(trt, network, settings.mark)
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
    profile = add_fixed_profile(trt, builder, config, inputs, shapes)
    attach_timing_cache(config, settings.timing_cache)
    return logger, builder, network, parser, config, inputs, shapes, marks, profile


def _finish(
    builder: Any, network: Any, config: Any, logger: Any, model_path: Path, settings: BuildSettings
) -> bytes:
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise _build_failed(model_path, logger)
    save_timing_cache(config, settings.timing_cache)
    data = bytes(memoryview(serialized))
    if settings.engine_path is not None:
        atomic_write_bytes(settings.engine_path, data)
    return data


@targets(10)
def build_trt10(
    trt: ModuleType,
    model_path: Path,
    settings: BuildSettings,
    *,
    calibrator: Any = None,
    int8_cache: Path | None = None,
    tools: BuildTools | None = None,
) -> BuiltEngine:
    """TensorRT 10.x: weakly typed build with precision flags, calibrator/cache and pins.
    Without a live ``calibrator``, ``tools.cache_calibrator`` makes one that reads ``int8_cache``."""
    logger, builder, network, _parser, config, inputs, shapes, marks, profile = _start(
        trt, model_path, settings, strongly_typed=False
    )
    if settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is None:
            if int8_cache is None:
                raise InputError("INT8 needs a calibration cache (--cache) or a calibrator with data")
            if tools is None:
                raise InputError("INT8 from a calibration cache needs build tools to read it (internal)")
            calibrator = tools.cache_calibrator(trt, int8_cache, inputs, shapes)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    pinned = []
    if settings.pins:
        if settings.constraints not in CONSTRAINTS:
            raise InputError(
                f"precision constraints must be one of {', '.join(CONSTRAINTS)}, got '{settings.constraints}'"
            )
        pinned = pin_layers(trt, network, settings.pins, _node_outputs(model_path))
        config.set_flag(getattr(trt.BuilderFlag, CONSTRAINTS[settings.constraints]))
    try:
        data = _finish(builder, network, config, logger, model_path, settings)
    finally:
        if calibrator is not None and hasattr(calibrator, "raise_if_failed"):
            calibrator.raise_if_failed()  # a get_batch failure explains a failed build best
    return BuiltEngine(
        data, str(trt.__version__), "tensorrt10-implicit", inputs, shapes, marks, pinned, calibrator
    )


@targets(11)
def build_trt11(
    trt: ModuleType,
    model_path: Path,
    settings: BuildSettings,
    *,
    calibrator: Any = None,
    int8_cache: Path | None = None,
    tools: BuildTools | None = None,
) -> BuiltEngine:
    """TensorRT 11.x: strongly typed build. FP16 and INT8 are written into the ONNX first by
    ``tools.typed_model`` (INT8 Q/DQ from the cache's amax; FP16 as typed tensors with Casts);
    pinned nodes stay FP32 there, so no precision constraint is needed."""
    if calibrator is not None:
        raise InputError(
            f"TensorRT {trt.__version__} has no calibrators: calibrate with `calib run` ({CPU_HINT}) and pass the cache"
        )
    if settings.int8 and int8_cache is None:
        raise InputError("INT8 on TensorRT 11 needs a calibration cache (--cache) to write Q/DQ scales from")
    with tempfile.TemporaryDirectory(prefix="trtq-qdq-") as tmp:
        parse_path = model_path
        if settings.int8 or settings.fp16:
            if tools is None:
                raise InputError(
                    "a strongly typed FP16/INT8 build needs build tools to type the model (internal)"
                )
            precision = "+".join(p for p, on in (("fp16", settings.fp16), ("int8", settings.int8)) if on)
            spec = BuildSpec(precision, pins=frozenset(settings.pins), cache_path=int8_cache)
            typed = tools.typed_model(load_onnx(model_path), spec)
            parse_path = Path(tmp) / f"{model_path.stem}.typed.onnx"
            save_onnx(typed, parse_path)
        logger, builder, network, _parser, config, inputs, shapes, marks, _profile = _start(
            trt, parse_path, settings, strongly_typed=True
        )
        data = _finish(builder, network, config, logger, model_path, settings)
    return BuiltEngine(data, str(trt.__version__), "tensorrt11-explicit", inputs, shapes, marks, [], None)


BuildFn = Callable[..., BuiltEngine]
# Major version -> build path. Newer majors than listed use the newest path.
BUILD_PATHS: dict[int, BuildFn] = {10: build_trt10, 11: build_trt11}


def build_path_for(trt: ModuleType) -> BuildFn:
    major = trt_major(trt)
    if major < min(BUILD_PATHS):
        raise InputError(
            f"TensorRT {trt.__version__} is too old: trtq targets TensorRT 10.x and 11.x; {CPU_HINT}"
        )
    return BUILD_PATHS.get(major) or BUILD_PATHS[max(BUILD_PATHS)]


def build_engine(
    trt: ModuleType,
    model_path: str | os.PathLike,
    settings: BuildSettings,
    *,
    calibrator: Any = None,
    int8_cache: str | os.PathLike | None = None,
    tools: BuildTools | None = None,
) -> BuiltEngine:
    """Build ``model_path`` with the path for the running TensorRT (see the module docstring)."""
    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    cache = Path(int8_cache) if int8_cache is not None else None
    if cache is not None and not cache.is_file():
        raise InputError(f"{cache}: no such calibration cache")
    return build_path_for(trt)(trt, path, settings, calibrator=calibrator, int8_cache=cache, tools=tools)


def deserialize(trt: ModuleType, engine_bytes: bytes) -> Any:
    logger = make_logger(trt)
    runtime = _create(trt.Runtime, logger, "runtime")
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise TrtqError(
            f"TensorRT could not load the engine it built: {logger.last_error('no reason given')}"
        )
    return engine, runtime


def engine_information(trt: ModuleType, engine: Any) -> str:
    """The engine inspector's JSON text (needs DETAILED verbosity at build time for precisions)."""
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def shapes_tuple(shapes: Mapping[str, Sequence[int]] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Dict of shapes -> the hashable form :class:`BuildSettings` stores."""
    return tuple((k, tuple(int(d) for d in v)) for k, v in (shapes or {}).items())
