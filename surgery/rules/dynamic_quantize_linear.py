"""``DynamicQuantizeLinear`` -> its defining arithmetic in FP32, bit-exact.

ONNX (and ONNX Runtime, checked on ties): ``x_min = min(0, min(x))``, ``x_max = max(0, max(x))``,
``y_scale = (x_max - x_min) / 255`` (ORT: 1.0 when ``x_max == x_min``, e.g. all zeros or empty),
``y_zero_point = saturate(round_half_even(0 - x_min / y_scale))``,
``y = saturate(round_half_even(x / y_scale) + y_zero_point)``. Rewritten as
``ReduceMin``/``ReduceMax`` (all axes), ``Min``/``Max`` with 0, ``Sub``, ``Div``, ``Equal`` +
``Where`` for the degenerate range, ``Clip``, ``Round``, ``Add``, and a ``Cast`` to UINT8 at the
end of ``y`` and ``y_zero_point`` (ONNX Runtime's QuantizeLinear divides by the scale and rounds
half to even, as ``Div`` + ``Round`` do; ``y_scale`` is the same FP32 number).

Where the casts land: TensorRT accepts UINT8 only as a network input or output, so the node's
rejection is lifted completely when ``y`` and ``y_zero_point`` are graph outputs or are read back
as FP32 by their consumers (``qdq_to_float`` turns ``Cast(UINT8)`` -> ``DequantizeLinear`` /
``Cast(FLOAT)`` into the FP32 value); a UINT8 consumer that no rule rewrites (e.g.
``MatMulInteger`` with this run-time zero point) keeps the Cast, and ``surgery check`` reports it.
Conditions: float32 input; opset >= 11.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node
from trtq.surgery.rule import Match, Rule, register_rule


@register_rule
class DynamicQuantizeLinearToFloat(Rule):
    name = "dynamic_quantize_linear"
    summary = "DynamicQuantizeLinear -> ReduceMin/Max, scale, zero point and Round/Clip in FP32, bit-exact"
    order = 54
    rewrites = ("DynamicQuantizeLinear",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        out = []
        for node in graph.nodes:
            if node.op != "DynamicQuantizeLinear" or (node.domain or "") not in ("", "ai.onnx"):
                continue
            dtype = getattr(node.inputs[0], "dtype", None)
            if dtype is not None and np.dtype(dtype) != np.float32:
                continue
            out.append(
                self._match([node], "DynamicQuantizeLinear is not supported by TensorRT's ONNX parser")
            )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        base = node.name
        x = node.inputs[0]

        def op(kind: str, inputs, attrs=None, tag: str = "", dtype=np.float32) -> gs.Variable:
            out = gs.Variable(names(f"{base}_{tag or kind.lower()}"), dtype=dtype)
            add_node(graph, names, kind, inputs, [out], attrs, base=f"{base}_{tag or kind.lower()}")
            return out

        def c(value, tag: str) -> gs.Constant:  # 0-d: the scale and zero point outputs are scalars
            return gs.Constant(names(f"{base}_{tag}"), np.array(value, np.float32))

        lo = op("Min", [op("ReduceMin", [x], {"keepdims": 0}, "min"), c(0.0, "zero")], tag="range_min")
        hi = op("Max", [op("ReduceMax", [x], {"keepdims": 0}, "max"), c(0.0, "zero")], tag="range_max")
        spread = op("Div", [op("Sub", [hi, lo], tag="spread"), c(255.0, "levels")], tag="spread_scale")
        same = op("Equal", [hi, lo], tag="degenerate", dtype=np.bool_)
        scale = op("Where", [same, c(1.0, "unit"), spread], tag="scale")
        initial = op("Sub", [c(0.0, "qmin"), op("Div", [lo, scale], tag="min_over_scale")], tag="initial_zp")
        bounds = [c(0.0, "qmin_f"), c(255.0, "qmax_f")]
        # round(clip(v)) == clip(round(v)) for integer bounds; Clip last lets qdq_to_float see the range
        zp = op("Clip", [op("Round", [initial], tag="zp_round"), *bounds], tag="zp")
        q = op(
            "Add",
            [op("Round", [op("Div", [x, scale], tag="x_over_scale")], tag="x_round"), zp],
            tag="x_plus_zp",
        )
        y_f = op("Clip", [q, *bounds], tag="y_saturate")
        y, y_scale, y_zp = (list(node.outputs) + [None, None, None])[:3]
        node.outputs.clear()
        for value, target, to in ((y_f, y, 2), (scale, y_scale, None), (zp, y_zp, 2)):
            if target is None or (isinstance(target, gs.Variable) and target.name == ""):
                continue
            if to is None:
                add_node(graph, names, "Identity", [value], [target], base=f"{base}_scale_out")
            else:
                add_node(
                    graph, names, "Cast", [value], [target], {"to": to}, base=f"{base}_{target.name}_cast"
                )
        return True
