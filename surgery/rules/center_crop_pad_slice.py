"""``CenterCropPad`` -> ``Slice`` for the axes it crops and zero ``Pad`` for the axes it pads.

Fires when the target ``shape`` is a constant and the input's rank and its size on every listed
axis (``axes``, default all) are static. Per axis, with input size ``d`` and target ``s``:
``s < d`` keeps ``[(d - s) // 2, (d - s) // 2 + s)`` (the window's start rounded down);
``s > d`` pads ``(s - d) // 2`` zeros before and the rest after; ``s == d`` leaves the axis alone.
Slicing and zero padding move values without arithmetic, so the result is exact. BOOL inputs
that need padding are left alone (TensorRT's ``Pad`` takes no BOOL).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype


def _plan(node: gs.Node) -> tuple[list[tuple[int, int, int]], list[int]] | None:
    """``(crops [(axis, start, stop)], pads [before..., after...])`` or None when not static."""
    x = node.inputs[0]
    target = constant_value(node.inputs[1])
    shape = getattr(x, "shape", None)
    if target is None or shape is None:
        return None
    rank = len(shape)
    axes = [a % rank for a in node.attrs.get("axes", range(rank))]
    sizes = [int(s) for s in target.reshape(-1)]
    if len(sizes) != len(axes):
        return None
    crops, pads = [], [0] * (2 * rank)
    for axis, s in zip(axes, sizes, strict=True):
        d = shape[axis]
        if not isinstance(d, int) or d < 0:
            return None
        if s < d:
            start = (d - s) // 2
            crops.append((axis, start, start + s))
        elif s > d:
            pads[axis] = (s - d) // 2
            pads[rank + axis] = s - d - pads[axis]
    return crops, pads


@register_rule
class CenterCropPadSlice(Rule):
    name = "center_crop_pad_slice"
    summary = "CenterCropPad with static sizes -> Slice (crop) + Pad (zeros)"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("CenterCropPad",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "CenterCropPad" or len(node.inputs) != 2:
                continue
            plan = _plan(node)
            if plan is None or (any(plan[1]) and np_dtype(node.inputs[0]) == np.dtype(bool)):
                continue
            out.append(self._match([node], "CenterCropPad is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        crops, pads = _plan(node)  # type: ignore[misc]
        x = node.inputs[0]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        if crops:
            axes, starts, stops = (np.array(v, np.int64) for v in zip(*crops, strict=True))
            x = b.op(
                "Slice",
                [x, b.const("starts", starts), b.const("ends", stops), b.const("axes", axes)],
                x.dtype,
            )
        if any(pads):
            b.op("Pad", [x, b.const("pads", np.array(pads, np.int64))], x.dtype, {"mode": "constant"}, out=y)
        else:
            b.identity(x, y)
        return True
