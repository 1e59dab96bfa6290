"""``QLinearConv`` -> ``DequantizeLinear`` + ``Conv`` (FP32) + ``Mul`` + ``QuantizeLinear``, bit-exact.

The integer Q/DQ form of :mod:`trtq.surgery.rules._qlinear`: ``DequantizeLinear(x, 1, x_zp)``
gives ``x - x_zp``; the weights become ``DequantizeLinear(w, 1)`` (INT8 with zero point 0, so
TensorRT keeps INT8 weights) or the FP32 constant ``w - w_zp`` (per output channel when
``w_zero_point`` is 1-D); the INT32 bias becomes FP32; the Conv sum of integers is then exactly
ONNX Runtime's INT32 accumulator, ``Mul`` by ``M = x_scale * w_scale / y_scale`` (per channel when
``w_scale`` is 1-D) forms the same FP32 product ORT's requantization forms, and
``QuantizeLinear(1, y_zp)`` rounds half to even and saturates as ORT does.

Exact (integers equal, on ties and at saturation) when every partial sum stays below 2**24:
the rule matches only when ``max|x - x_zp| * sum|w - w_zp| + |B| < 2**24`` for every output
channel, with the weights, scales and zero points constant and ``x_scale``/``y_scale`` per-tensor.
The reference is ORT's formula; ORT's x86 u8s8 kernels without VNNI may saturate int16 pair sums
(see :mod:`trtq.surgery.rules.matmulinteger_to_float`), in which case ``surgery fix``'s
verification refuses the result. Q/DQ nodes with UINT8 or non-zero zero points that this leaves
are what :mod:`trtq.surgery.rules.qdq_to_float` turns into TensorRT-accepted FP32 arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const, constant_value, input_at
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
    x_dtype = data_dtype(node.inputs[0]) or zero_point_dtype(node, 2) or np.dtype(np.uint8)
    xq = scalar_params(node, 1, 2, x_dtype)
    yq = scalar_params(node, 6, 7, np.uint8)
    w = constant_value(input_at(node, 3))
    ws = constant_value(input_at(node, 4))
    wz_t = input_at(node, 5)
    wz = np.zeros((), w.dtype if w is not None else np.int8) if wz_t is None else constant_value(wz_t)
    b_t = input_at(node, 8)
    bias = None if b_t is None else constant_value(b_t)
    if (
        xq is None
        or yq is None
        or w is None
        or ws is None
        or wz is None
        or (b_t is not None and bias is None)
    ):
        return None
    m = w.shape[0]
    if ws.size not in (1, m) or wz.size not in (1, m) or w.ndim < 3:
        return None
    w_int = weight_int(w, wz.reshape(-1) if wz.size > 1 else wz.reshape(()), 0)
    if accumulator_bound(w_int, max_deviation(xq[1]), bias) >= EXACT_LIMIT:
        return None
    return {"xq": xq, "yq": yq, "w": w, "ws": ws.reshape(-1), "wz": wz.reshape(-1), "bias": bias}


@register_rule
class QLinearConvToQDQ(Rule):
    name = "qlinear_conv"
    summary = "QLinearConv -> DQ(x) + FP32 Conv on integers + Mul(scale) + Q, bit-exact (sums < 2^24)"
    order = 55
    rewrites = ("QLinearConv",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "QLinearConv" or (node.domain or "") not in ("", "ai.onnx"):
                continue
            if _plan(node) is not None:
                out.append(self._match([node], "QLinearConv is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        (s_x, z_x), (s_y, z_y) = plan["xq"], plan["yq"]
        w, wz = plan["w"], plan["wz"]
        m = w.shape[0]
        base = node.name
        x_int = dequantize_int(graph, names, node.inputs[0], z_x, f"{base}_x")
        w_in = weights_input(
            graph, names, node.inputs[3], w, wz if wz.size > 1 else wz.reshape(()), 0, f"{base}_w"
        )
        inputs = [x_int, w_in]
        if plan["bias"] is not None:
            inputs.append(const(names, f"{base}_bias_int", plan["bias"].astype(np.float32)))
        acc = gs.Variable(names(f"{base}_acc"), dtype=np.float32)
        add_node(graph, names, "Conv", inputs, [acc], dict(node.attrs), base=f"{base}_conv")
        multiplier = output_multiplier(s_x, plan["ws"], s_y)
        if multiplier.size > 1:
            multiplier = multiplier.reshape((1, m) + (1,) * (w.ndim - 2))
        else:
            multiplier = multiplier.reshape(())
        scaled = mul_const(graph, names, acc, multiplier, base)
        out = node.outputs[0]
        node.outputs.clear()
        quantize_int(graph, names, scaled, z_y, out, f"{base}_y")
        return True
