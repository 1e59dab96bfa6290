"""TensorRT network definition steps shared by engine builds and calibration runs.

Each function takes the ``tensorrt`` module it works against (imported by
:func:`trtq._core.trt_import.import_tensorrt`), so nothing here imports TensorRT.

Conventions: the ONNX parser names network tensors after their ONNX tensor names and layers
after their ONNX node names (a node that becomes several layers gives layers whose names start
with the node's), so pins and marks are given as ONNX names.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo
from trtq._core.trt_import import targets

log = logging.getLogger(__name__)

# Layer types that open / close a loop or conditional body: tensors between them cannot be marked.
_BODY_START = ("TRIP_LIMIT", "RECURRENCE", "ITERATOR", "CONDITION", "CONDITIONAL_INPUT")
_BODY_END = ("LOOP_OUTPUT", "CONDITIONAL_OUTPUT")
# Layers whose outputs are never activations worth comparing.
_NOT_ACTIVATIONS = ("CONSTANT", "SHAPE")
_FLOAT_TYPES = ("FLOAT", "HALF", "BF16")


@functools.cache
def _logger_class(trt: ModuleType) -> type:
    class TrtLogger(trt.ILogger):
        """Routes TensorRT's messages to ``logging`` and keeps the errors for the final message."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))
                log.debug("TensorRT error: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

        def last_error(self, default: str = "") -> str:
            """The last error TensorRT logged, or ``default`` when there was none."""
            return self.errors[-1] if self.errors else default

    return TrtLogger


def make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and collects errors in ``.errors``
    (the last one: ``.last_error(default)``)."""
    return _logger_class(trt)()


def network_flags(trt: ModuleType, *, strongly_typed: bool) -> int:
    """``create_network`` flags: 0 (explicit batch is the only mode in 10.x), or STRONGLY_TYPED."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0


def parse_onnx(trt: ModuleType, network: Any, logger: Any, path: str | os.PathLike) -> Any:
    """Parse ``path`` into ``network``; a failure raises one line naming the node and its op."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return parser
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    if not errors:
        raise InputError(f"{path}: TensorRT's ONNX parser failed: {logger.last_error() or 'no reason given'}")
    parser_error = errors[0]
    node, op = parser_error.node_name(), parser_error.node_operator()
    where = f"node '{node}' ({op})" if node or op else "the model"
    more = f" (+{len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    desc = (
        str(parser_error.desc()).strip().splitlines()[0]
        if str(parser_error.desc()).strip()
        else str(parser_error.code())
    )
    raise InputError(f"{Path(path)}: TensorRT cannot parse {where}: {desc}{more}")


def network_inputs(trt: ModuleType, network: Any) -> list[TensorInfo]:
    """The network's inputs; ``shape`` has -1 for dynamic dimensions (TensorRT's convention),
    ``dtype`` is numpy's."""
    out = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        out.append(
            TensorInfo(tensor.name, tuple(int(d) for d in tensor.shape), np.dtype(trt.nptype(tensor.dtype)))
        )
    return out


def resolve_shapes(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input: its static shape, or ``shapes[name]`` where dynamic."""
    resolved = {}
    for inp in inputs:
        given = shapes.get(inp.name)
        if given is None:
            if inp.is_dynamic:
                raise InputError(
                    f"input '{inp.name}' has dynamic shape {list(inp.shape)}; give its shape (e.g. 1x3x640x640)"
                )
            resolved[inp.name] = inp.shape
            continue
        given = tuple(int(d) for d in given)
        if len(given) != len(inp.shape) or any(
            s >= 0 and s != g for s, g in zip(inp.shape, given, strict=False)
        ):
            raise InputError(
                f"input '{inp.name}': shape {list(given)} does not fit the model's {list(inp.shape)}"
            )
        resolved[inp.name] = given
    return resolved


def add_fixed_profile(
    trt: ModuleType,
    builder: Any,
    config: Any,
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, tuple[int, ...]],
) -> Any:
    """One optimization profile with MIN = OPT = MAX = ``shapes`` for the dynamic inputs.

    Returns the profile, or ``None`` when every input is static (no profile needed).
    """
    dynamic = [i for i in inputs if i.is_dynamic]
    if not dynamic:
        return None
    profile = builder.create_optimization_profile()
    for inp in dynamic:
        shape = shapes[inp.name]
        profile.set_shape(inp.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    return profile


@dataclass
class MarkResult:
    """Which tensors were made network outputs, and why the others were not."""

    marked: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # tensor name -> reason


def _layer_type_names(trt: ModuleType, names: Iterable[str]) -> set:
    return {getattr(trt.LayerType, n) for n in names if hasattr(trt.LayerType, n)}


def _float_types(trt: ModuleType) -> set:
    return {getattr(trt.DataType, n) for n in _FLOAT_TYPES if hasattr(trt.DataType, n)}


def markable_tensors(trt: ModuleType, network: Any) -> MarkResult:
    """Every float activation TensorRT can make an output, in layer order.

    Skipped (with a reason): network inputs, tensors already outputs, tensors inside loop or
    conditional bodies (between the boundary layers, in the parser's layer order), shape
    tensors, outputs of constant/shape layers, and non-float tensors.
    """
    return _markable(trt, network)[0]


def _markable(trt: ModuleType, network: Any) -> tuple[MarkResult, dict[str, Any]]:
    """:func:`markable_tensors`, and the markable tensors by name."""
    starts, ends = _layer_type_names(trt, _BODY_START), _layer_type_names(trt, _BODY_END)
    not_act = _layer_type_names(trt, _NOT_ACTIVATIONS)
    floats = _float_types(trt)
    result = MarkResult()
    by_name = {}
    depth = 0
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        if layer.type in starts:
            depth += 1
        elif layer.type in ends:  # a loop/conditional output layer's tensor lives outside the body
            depth = max(0, depth - 1)
        for oi in range(layer.num_outputs):
            tensor = layer.get_output(oi)
            if tensor is None:
                continue
            reason = None
            if tensor.is_network_input:
                reason = "network input"
            elif tensor.is_network_output:
                reason = "already an output"
            elif depth > 0:
                reason = "inside a loop or conditional body"
            elif tensor.is_shape_tensor:
                reason = "shape tensor"
            elif layer.type in not_act:
                reason = "constant or shape layer"
            elif tensor.dtype not in floats:
                reason = "not a float tensor"
            if reason:
                result.skipped[tensor.name] = reason
            else:
                result.marked.append(tensor.name)
                by_name[tensor.name] = tensor
    return result, by_name


def _wanted(trt: ModuleType, network: Any, names: Sequence[str] | str) -> tuple[MarkResult, list, dict]:
    """The markable candidates, the requested ones among them (``"all"``: every one), by name;
    a requested tensor that cannot be marked is an error (one that is already an output is not)."""
    candidates, by_name = _markable(trt, network)
    if names == "all":
        wanted = list(candidates.marked)
    else:
        wanted = list(names)
        bad = {
            n: reason
            for n in wanted
            if n not in by_name
            and (reason := candidates.skipped.get(n, "no such tensor in the TensorRT network"))
            != "already an output"
        }
        if bad:
            name, reason = next(iter(bad.items()))
            raise InputError(
                f"cannot mark tensor '{name}' as an output: {reason}"
                + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")
            )
        wanted = [n for n in wanted if n in by_name]
    return candidates, wanted, by_name


def mark_outputs(trt: ModuleType, network: Any, names: Sequence[str] | str) -> MarkResult:
    """Make ``names`` (or ``"all"``) network outputs; a requested tensor that cannot be marked is an error."""
    candidates, wanted, by_name = _wanted(trt, network, names)
    for name in wanted:
        network.mark_output(by_name[name])
    return MarkResult(marked=wanted, skipped=candidates.skipped)


@targets(10, 11)
def mark_debug_tensors(trt: ModuleType, network: Any, names: Sequence[str] | str) -> MarkResult:
    """Read ``names`` (or ``"all"``) as debug tensors without changing fusions (TensorRT >= 10.12):
    every tensor that survives fusion becomes a debug tensor
    (``mark_unfused_tensors_as_debug_tensors``); no output is added. ``marked`` lists the
    requested candidates: which of them the engine really reports is known only at run time.
    The same requests as :func:`mark_outputs` are errors."""
    candidates, wanted, _by_name = _wanted(trt, network, names)
    if not network.mark_unfused_tensors_as_debug_tensors():
        raise InputError("TensorRT could not mark the network's unfused tensors as debug tensors")
    return MarkResult(marked=wanted, skipped=candidates.skipped)


@targets(10)
def pin_layers(
    trt: ModuleType, network: Any, pins: Sequence[str], node_outputs: Mapping[str, Sequence[str]]
) -> list[str]:
    """Keep the layers of the ONNX nodes ``pins`` in FP32 (TensorRT 10 precision constraints).

    A layer is pinned when its name is a pinned node's name (or starts with it and ``_``/`` ``),
    or when it produces one of a pinned node's output tensors. Its compute precision
    (``layer.precision``) and every float output (``set_output_type``) are set to FP32. The
    builder flag OBEY/PREFER_PRECISION_CONSTRAINTS is set by the caller. Returns the pinned
    layer names; a pin that matches no layer (e.g. folded away) is logged.
    """
    pin_set = set(pins)
    floats = _float_types(trt)
    matched_pins: set[str] = set()
    pinned_layers = []
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        by_name = next(
            (p for p in pin_set if layer.name == p or layer.name.startswith((p + "_", p + " "))), None
        )
        by_tensor = next(
            (
                p
                for p in pin_set
                if any(tensor is not None and tensor.name in node_outputs.get(p, ()) for tensor in outputs)
            ),
            None,
        )
        hit = by_name or by_tensor
        if hit is None:
            continue
        if not outputs or not all(tensor is not None and tensor.dtype in floats for tensor in outputs):
            continue  # integer/shape layers have no float precision to pin
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        pinned_layers.append(layer.name)
        matched_pins.add(hit)
    for p in sorted(pin_set - matched_pins):
        log.warning("pin '%s' matches no TensorRT layer (folded away or renamed); it has no effect", p)
    return pinned_layers
