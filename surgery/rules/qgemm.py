"""ONNX Runtime's ``QGemm`` (domain ``com.microsoft``, what QOperator quantization makes of ``Gemm``)
-> ``DequantizeLinear`` + FP32 ``Gemm`` on integers + ``Mul`` (+ ``QuantizeLinear``), bit-exact.

ORT (``contrib_ops/cpu/quantization/qgemm.cc``): the INT32 accumulator of ``(A - a_zp)(B - b_zp)``
plus the INT32 bias ``C``, then either requantized with ``scale = alpha * a_scale * b_scale / y_scale``
(FP32, in that order; rounded half to even, ``y_zp`` added, saturated) when ``y_scale`` is given, or
returned as FP32 ``acc * alpha * a_scale * b_scale``. The rewrite is the integer form of
:mod:`trtq.surgery.rules._qlinear`: ``DequantizeLinear(A, 1, a_zp)``, the constant B as
``DequantizeLinear(B, 1)`` (INT8, zero point 0) or FP32 ``B - b_zp``, ``Gemm`` with ORT's
``transA``/``transB``, ``alpha = beta = 1`` and the FP32 bias, which sums integers exactly while
every partial sum stays below 2**24 (checked from B and C), then ``Mul`` by the same FP32 scale and
``QuantizeLinear(1, y_zp)`` for a quantized output.

Conditions: B, C, scales and zero points constant; ``a_scale``/``a_zp`` per tensor; ``b_scale``
per tensor or per column; the accumulator bound above.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import (
    EXACT_LIMIT,
    accumulator_bound,
    const0,
    data_dtype,
    dequantize_int,
    max_deviation,
    mul_const,
    quantize_int,
    scalar_params,
    weight_int,
    weights_input,
    zero_point_dtype,
)

ORT_DOMAIN = "com.microsoft"


def _plan(node: gs.Node) -> dict | None:
    a_dtype = data_dtype(node.inputs[0]) or zero_point_dtype(node, 2)
    if a_dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    aq = scalar_params(node, 1, 2, a_dtype)
    b, bs = constant_value(input_at(node, 3)), constant_value(input_at(node, 4))
    bz = constant_value(input_at(node, 5))
    c_t = input_at(node, 6)
    bias = None if c_t is None else constant_value(c_t)
    y_scale_t = input_at(node, 7)
    yq = None if y_scale_t is None else scalar_params(node, 7, 8, a_dtype)
    if (
        aq is None
        or b is None
        or bs is None
        or bz is None
        or b.ndim != 2
        or (c_t is not None and bias is None)
    ):
        return None
    if y_scale_t is not None and yq is None:
        return None
    trans_b = int(node.attrs.get("transB", 0))
    b_kn = b.T if trans_b else b
    n = b_kn.shape[1]
    if bs.size not in (1, n) or bz.size != bs.size:
        return None
    bz_v = bz.reshape(-1) if bz.size > 1 else bz.reshape(())
    bound = accumulator_bound(weight_int(b_kn, bz_v, 1), max_deviation(aq[1]), None, axis=1)
    bound += 0.0 if bias is None else float(np.abs(bias.astype(np.float64)).max(initial=0.0))
    if bound >= EXACT_LIMIT:
        return None
    alpha = np.float32(node.attrs.get("alpha", 1.0))
    scale = ((alpha * aq[0]).astype(np.float32) * bs.reshape(-1).astype(np.float32)).astype(np.float32)
    if yq is not None:
        scale = (scale / yq[0]).astype(np.float32)
    return {"aq": aq, "yq": yq, "b": b, "bz": bz_v, "bias": bias, "scale": scale, "trans_b": trans_b,
            "axis": 0 if trans_b else 1}  # fmt: skip


@register_rule
class QGemmToQDQ(Rule):
    name = "qgemm"
    summary = "ORT QGemm -> DQ(a) + FP32 Gemm on integers + Mul(scale) (+ Q), bit-exact (sums < 2^24)"
    order = 56
    rewrites = ("QGemm",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "QGemm is an ONNX Runtime contrib op TensorRT does not know")
            for n in graph.nodes
            if n.op == "QGemm" and n.domain == ORT_DOMAIN and _plan(n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        base = node.name
        a_int = dequantize_int(graph, names, node.inputs[0], plan["aq"][1], f"{base}_a")
        b_in = weights_input(graph, names, node.inputs[3], plan["b"], plan["bz"], plan["axis"], f"{base}_b")
        inputs = [a_int, b_in]
        if plan["bias"] is not None:
            inputs.append(const0(names, f"{base}_bias_int", plan["bias"].astype(np.float32)))
        acc = gs.Variable(names(f"{base}_acc"), dtype=np.float32)
        attrs = {"transA": int(node.attrs.get("transA", 0)), "transB": plan["trans_b"]}
        add_node(graph, names, "Gemm", inputs, [acc], attrs, base=f"{base}_gemm")
        scale = plan["scale"] if plan["scale"].size > 1 else plan["scale"].reshape(())
        out = node.outputs[0]
        node.outputs.clear()
        if plan["yq"] is None:
            out.dtype = np.float32
            add_node(
                graph,
                names,
                "Mul",
                [acc, const0(names, f"{base}_multiplier", scale)],
                [out],
                base=f"{base}_mul",
            )
            return True
        scaled = mul_const(graph, names, acc, scale, base)
        out.dtype = np.dtype(plan["yq"][1].dtype)
        quantize_int(graph, names, scaled, plan["yq"][1], out, f"{base}_y")
        return True
