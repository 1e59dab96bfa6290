"""FP16 range pre-check: what cannot be represented in half precision, and where (no extra run).

Checked, after folding (as TensorRT folds before choosing precisions):
- *initializers*: float weights whose largest magnitude exceeds 65504 (they would become inf);
- *activations*: tensors whose calibrated amax, or whose largest |value| seen in the FP32
  reference run a comparison already made, exceeds 65504.

Checking the unfolded model (``fold=False``) reproduces what a naive cast sees: for PP-OCRv4 det
it flags a BatchNorm ``running_var`` of 9.8e7 that TensorRT never materialises. That is the
false alarm this module exists to avoid; the default folds first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.onnx_model import float_tensors, node_names
from trtq.precision.emulate import folded
from trtq.precision.qdq import FP16_MAX

_FLOAT = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


@dataclass(frozen=True)
class RangeIssue:
    """A tensor beyond FP16's range: ``kind`` is ``"initializer"`` or ``"activation"``; ``node``
    the first node reading the initializer, or the activation's producer."""

    kind: str
    tensor: str
    node: str | None
    max_abs: float

    def to_dict(self) -> dict:
        return asdict(self)


def _constants(model: onnx.ModelProto) -> Iterable[tuple[str, np.ndarray]]:
    for init in model.graph.initializer:
        if init.data_type in _FLOAT:
            yield init.name, numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT:
                    yield node.output[0], numpy_helper.to_array(a.t)


def fp16_range_check(
    model: onnx.ModelProto,
    amax: Mapping[str, float] | None = None,
    observed: Mapping[str, float] | None = None,
    *,
    fold: bool = True,
    limit: float = FP16_MAX,
) -> list[RangeIssue]:
    """Tensors whose magnitude exceeds ``limit`` (65504 by default), largest first.

    ``amax``: calibrated ranges (tensor -> amax); ``observed``: largest |x| per tensor seen in an
    FP32 run (as returned by :func:`trtq.precision.compare.compare_runs`).
    """
    m = folded(model) if fold else model
    consumer: dict[str, str] = {}
    for node, name in zip(m.graph.node, node_names(m), strict=True):
        for i in node.input:
            consumer.setdefault(i, name)
    issues: list[RangeIssue] = []
    for name, value in _constants(m):
        if value.size:
            with np.errstate(invalid="ignore"):
                big = float(np.nanmax(np.abs(value.astype(np.float64))))
            if big > limit:
                issues.append(RangeIssue("initializer", name, consumer.get(name), big))
    producers = {s.name: s.producer.node if s.producer else None for s in float_tensors(m)}
    ranges: dict[str, float] = {}
    for source in (amax or {}), (observed or {}):
        for name, value in source.items():
            if name in producers:
                value = float(value) if np.isfinite(value) else float("inf")
                ranges[name] = max(ranges.get(name, 0.0), value)
    for name, value in ranges.items():
        if value > limit:
            issues.append(RangeIssue("activation", name, producers[name], value))
    issues.sort(key=lambda i: -i.max_abs)
    return issues
