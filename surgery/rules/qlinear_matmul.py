"""``QLinearMatMul`` -> ``DequantizeLinear`` + ``MatMul`` (FP32) + ``Mul`` + ``QuantizeLinear``, bit-exact.

The same integer Q/DQ form as :mod:`trtq.surgery.rules.qlinear_conv`: ``DequantizeLinear(a, 1,
a_zp)``, the constant B as ``DequantizeLinear(b, 1)`` (INT8, zero point 0) or the FP32 constant
``b - b_zp`` (per column when ``b_zero_point`` is 1-D), ``MatMul`` summing integers exactly,
``Mul`` by ``a_scale * b_scale / y_scale`` (per column when ``b_scale`` is 1-D), then
``QuantizeLinear(1, y_zp)`` (round half to even, saturate).

Exact when every partial sum stays below 2**24: the rule matches only when B is a constant 2-D
matrix with ``max|a - a_zp| * sum_k |b[k, n] - b_zp| < 2**24`` for every column ``n``, and the
scales and zero points of A and Y are constant per-tensor values.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import (
    EXACT_LIMIT,
    accumulator_bound,
    data_dtype,
    dequantize_int,
    max_deviation,
    mul_const,
    output_multiplier,
    quantize_int,
    scalar_params,
    weight_int,
    weights_input,
    zero_point_dtype,
)


def _plan(node: gs.Node) -> dict | None:
    a_dtype = data_dtype(node.inputs[0]) or zero_point_dtype(node, 2) or np.dtype(np.uint8)
    aq = scalar_params(node, 1, 2, a_dtype)
    yq = scalar_params(node, 6, 7, np.uint8)
    b = constant_value(input_at(node, 3))
    bs = constant_value(input_at(node, 4))
    bz = constant_value(input_at(node, 5)) if input_at(node, 5) is not None else None
    if aq is None or yq is None or b is None or bs is None or b.ndim != 2:
        return None
    if bz is None:
        bz = np.zeros((), b.dtype)
    n = b.shape[1]
    if bs.size not in (1, n) or bz.size not in (1, n):
        return None
    bz = bz.reshape(-1) if bz.size > 1 else bz.reshape(())
    if accumulator_bound(weight_int(b, bz, 1), max_deviation(aq[1]), None, axis=1) >= EXACT_LIMIT:
        return None
    return {"aq": aq, "yq": yq, "b": b, "bs": bs.reshape(-1), "bz": bz}


@register_rule
class QLinearMatMulToQDQ(Rule):
    name = "qlinear_matmul"
    summary = "QLinearMatMul -> DQ(a) + FP32 MatMul on integers + Mul(scale) + Q, bit-exact (sums < 2^24)"
    order = 56
    rewrites = ("QLinearMatMul",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "QLinearMatMul is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "QLinearMatMul" and (n.domain or "") in ("", "ai.onnx") and _plan(n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        (s_a, z_a), (s_y, z_y) = plan["aq"], plan["yq"]
        base = node.name
        a_int = dequantize_int(graph, names, node.inputs[0], z_a, f"{base}_a")
        b_in = weights_input(graph, names, node.inputs[3], plan["b"], plan["bz"], 1, f"{base}_b")
        acc = gs.Variable(names(f"{base}_acc"), dtype=np.float32)
        add_node(graph, names, "MatMul", [a_int, b_in], [acc], base=f"{base}_matmul")
        multiplier = output_multiplier(s_a, plan["bs"], s_y)
        scaled = mul_const(
            graph, names, acc, multiplier if multiplier.size > 1 else multiplier.reshape(()), base
        )
        out = node.outputs[0]
        node.outputs.clear()
        quantize_int(graph, names, scaled, z_y, out, f"{base}_y")
        return True
