"""Per-operator restrictions of TensorRT's ONNX parser, as checks over one node.

Each check is registered for an op type and returns ``(severity, reason)`` pairs: ``"error"`` when
the parser rejects the node, ``"warning"`` when it accepts it with a loss (e.g. DOUBLE cast down).
The facts come from :mod:`trtq.surgery.support_table`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from trtq.surgery import support_table as table
from trtq.surgery.scope import Scope

Issue = tuple[str, str]
Check = Callable[[onnx.NodeProto, Scope], list[Issue]]

_CHECKS: dict[str, list[Check]] = {}


def restriction(*op_types: str) -> Callable[[Check], Check]:
    """Register a check for the given op types."""

    def deco(fn: Check) -> Check:
        for op in op_types:
            _CHECKS.setdefault(op, []).append(fn)
        return fn

    return deco


def checks_for(op_type: str) -> list[Check]:
    return _CHECKS.get(op_type, [])


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


@restriction(*table.CONSTANT_INPUTS)
def _constant_inputs(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    issues = []
    for index, kind in table.CONSTANT_INPUTS[node.op_type].items():
        name = _input(node, index)
        if not name:
            continue
        ok = scope.is_initializer(name) if kind == "initializer" else scope.is_resolvable(name)
        if not ok:
            what = "an initializer" if kind == "initializer" else "resolvable to a constant"
            issues.append(("error", f"input {index} ({name}) must be {what}"))
    return issues


@restriction(*table.POOL_OPS)
def _pooling(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    issues = []
    kernel = attr(node, "kernel_shape") or []
    if kernel and len(kernel) not in (2, 3):
        issues.append(("error", f"{len(kernel)}D pooling; only 2D or 3D is supported"))
    dilations = attr(node, "dilations") or []
    if any(d != 1 for d in dilations):
        issues.append(("error", f"dilations {list(dilations)} must be empty or all ones"))
    return issues


@restriction(*table.FIRST_OUTPUT_ONLY)
def _first_output_only(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    extra = [o for o in node.output[1:] if o]
    return [("error", f"only the first output is supported; {extra} is used")] if extra else []


@restriction("Resize")
def _resize(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    issues = []
    coord = attr(node, "coordinate_transformation_mode", "half_pixel")
    mode = attr(node, "mode", "nearest")
    nearest = attr(node, "nearest_mode", "round_prefer_floor")
    policy = attr(node, "keep_aspect_ratio_policy", "stretch")
    if coord not in table.RESIZE_COORDINATE_MODES:
        issues.append(("error", f"coordinate_transformation_mode {coord!r} is not supported"))
    if mode not in table.RESIZE_MODES:
        issues.append(("error", f"mode {mode!r} is not supported (nearest, linear)"))
    if mode == "nearest" and nearest not in table.RESIZE_NEAREST_MODES:
        issues.append(("error", f"nearest_mode {nearest!r} is not supported"))
    if policy not in table.RESIZE_ASPECT_POLICIES:
        issues.append(("error", f"keep_aspect_ratio_policy {policy!r} is not supported"))
    if attr(node, "antialias", 0):
        issues.append(("error", "antialias is not supported"))
    scales = _input(node, 2)
    axes = attr(node, "axes")
    rank = len(scope.shapes.get(_input(node, 0), []) or [])
    if scales and not scope.is_initializer(scales) and axes is not None and list(axes) != list(range(rank)):
        issues.append(("error", "with a tensor 'scales' input, 'axes' must be 0..rank-1"))
    for index, what in ((2, "scales"), (3, "sizes")):
        name = _input(node, index)
        if name and not scope.is_resolvable(name):
            issues.append(
                (
                    "warning",
                    f"{what} ({name}) is computed at run time; constant {what} let TensorRT fix the output shape",
                )
            )
    return issues


@restriction("ScatterND")
def _scatternd(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    reduction = attr(node, "reduction", "none")
    return (
        [] if reduction == "none" else [("error", f"reduction {reduction!r} is not supported (only 'none')")]
    )


@restriction("TopK")
def _topk(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    issues = []
    if attr(node, "sorted", 1) != 1:
        issues.append(("error", "sorted must be 1"))
    k = scope.consts.get(_input(node, 1))
    if scope.opset < 10:
        k = np.asarray(attr(node, "k", 0))
    if k is not None and k.size == 1 and int(k.reshape(-1)[0]) > table.TOPK_MAX_K:
        issues.append(
            ("error", f"K = {int(k.reshape(-1)[0])} exceeds TensorRT's limit of {table.TOPK_MAX_K}")
        )
    return issues


@restriction("QuantizeLinear", "DequantizeLinear")
def _zero_point(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    zp = scope.consts.get(_input(node, 2))
    if zp is not None and zp.size and np.any(zp != 0):
        return [("error", "zero point must be 0")]
    return []


@restriction("Dropout")
def _dropout(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    training = _input(node, 2)
    if not training:
        return []
    value = scope.consts.get(training)
    if value is None:
        return [("error", "is_training must be an initializer")]
    return [("error", "is_training must be False")] if bool(np.any(value)) else []


@restriction("LSTM")
def _lstm(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    issues = []
    if attr(node, "input_forget", 0):
        issues.append(("error", "input_forget must be 0"))
    if attr(node, "layout", 0):
        issues.append(("error", "layout must be 0"))
    return issues


@restriction("Constant")
def _constant(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [("error", f"attribute {bad[0]} is not supported")] if bad else []


@restriction("GridSample")
def _grid_sample(node: onnx.NodeProto, scope: Scope) -> list[Issue]:
    shape = scope.shapes.get(_input(node, 0))
    return [("error", f"input must be 4D, got rank {len(shape)}")] if shape and len(shape) != 4 else []
