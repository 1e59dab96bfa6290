"""``Resize`` whose ``scales``/``sizes`` are computed at run time -> constant ``scales``.

Typical export: ``sizes = Concat(Slice(Shape(x), 0, 2), [H', W'])``. When shape inference
tells, for every axis, either that the output dimension equals the input dimension (the same
symbol or value: scale 1) or both are known numbers (scale = out/in), the computed input is
replaced by a constant ``scales``. The output size ``floor(in * scale)`` must give ``out`` again in
float32 and float64 arithmetic, so the rewrite never changes a shape or a coordinate. Opset >= 11.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, const, constant_value, input_at, set_io
from trtq.surgery.rule import Match, Rule, register_rule


def constant_scales(node: gs.Node) -> np.ndarray | None:
    """The constant scales equivalent to ``node``'s computed scales/sizes, or None."""
    if node.attrs.get("axes") is not None:
        return None
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = getattr(x, "shape", None), getattr(y, "shape", None)
    if xs is None or ys is None or len(xs) != len(ys) or not xs:
        return None
    scales = []
    for a, b in zip(xs, ys, strict=True):
        if a == b and a is not None and (not isinstance(a, int) or a > 0):
            scales.append(1.0)
        elif isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0:
            s = np.float32(b / a)
            if math.floor(float(s) * a) != b or int(np.float32(s) * np.float32(a)) != b:
                return None
            scales.append(float(s))
        else:
            return None
    return np.asarray(scales, np.float32)


def _computed(node: gs.Node) -> bool:
    for idx in (2, 3):
        t = input_at(node, idx)
        if t is not None and constant_value(t) is None:
            return True
    return False


@register_rule
class ResizeConstantScales(Rule):
    name = "resize_constant_scales"
    summary = "Resize with scales/sizes computed at run time -> constant scales (when shapes allow)"
    order = 65
    rewrites = ("Resize",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        return [
            self._match(
                [n], "Resize scales/sizes computed at run time; constant scales keep the shape static"
            )
            for n in graph.nodes
            if n.op == "Resize" and _computed(n) and constant_scales(n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        scales = constant_scales(node)
        if scales is None:
            return False
        roi = node.inputs[1] if len(node.inputs) > 1 else gs.Variable.empty()
        set_io(node.inputs, [node.inputs[0], roi, const(NameMaker(graph), f"{node.name}_scales", scales)])
        return True
