"""``MatMulInteger`` -> ``MatMul`` in float32 on zero-point-shifted operands, rounded and cast to INT32.

Exact when the inner dimension ``K`` is known and at most 258 (see
:mod:`trtq.surgery.rules._integer_ops`), or when B is a constant whose columns bound every partial
sum below 2**24 (``max|a - a_zp| * sum_k |b[k, n] - b_zp| < 2**24``, the bound of
:mod:`trtq.surgery.rules._qlinear`). ``a_zero_point`` must be a scalar: a constant, or a tensor
computed at run time (as ``DynamicQuantizeLinear`` makes it for ``quantize_dynamic`` models; then
``Cast(a) - Cast(a_zero_point)`` in FP32); ``b_zero_point`` a constant, per column allowed (it
broadcasts along the last axis of B).

Note: for uint8 A times int8 B, ONNX Runtime's x86 kernel saturates intermediate int16 sums
(seen with A = 255), so its own result departs from the ONNX formula that this rewrite computes
exactly; ``surgery fix`` then refuses to write, and ``--no-verify`` is the way through.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._integer_ops import (
    EXACT_MAX_TERMS,
    bounded_by_weights,
    is_scalar_tensor,
    round_cast_int32,
    to_float_minus_tensor,
    to_float_minus_zp,
    zero_point_value,
)


def _b_bounds_sums(node: gs.Node, bzp: np.ndarray) -> bool:
    b = constant_value(node.inputs[1])
    return (
        b is not None
        and b.ndim == 2
        and bounded_by_weights(b, bzp.reshape(-1) if bzp.size > 1 else bzp.reshape(()), 1)
    )


def _inner_dim(node: gs.Node) -> int | None:
    b = node.inputs[1]
    shape = getattr(b, "shape", None)
    if shape is None or len(shape) < 2 or not isinstance(shape[-2], int):
        return None
    return int(shape[-2])


@register_rule
class MatMulIntegerToFloat(Rule):
    name = "matmulinteger_to_float"
    summary = "MatMulInteger -> float MatMul + Round + Cast(INT32), exact for K <= 258 or bounded constant B"
    order = 61
    rewrites = ("MatMulInteger",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "MatMulInteger":
                continue
            k = _inner_dim(node)
            azp, bzp = zero_point_value(node, 2), zero_point_value(node, 3)
            if k is None or bzp is None or (azp is None and not is_scalar_tensor(input_at(node, 2))):
                continue
            if azp is not None and azp.size != 1:
                continue
            if k > EXACT_MAX_TERMS and not _b_bounds_sums(node, bzp):
                continue
            out.append(self._match([node], "MatMulInteger is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        azp = zero_point_value(node, 2)
        if azp is not None:
            af = to_float_minus_zp(graph, names, node.inputs[0], azp.reshape(()))
        else:  # a run-time zero point: both cast to FP32 (integers, exact), then subtracted
            af = to_float_minus_tensor(graph, names, node.inputs[0], node.inputs[2])
        bf = to_float_minus_zp(graph, names, node.inputs[1], zero_point_value(node, 3))
        out = node.outputs[0]
        mm = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
        add_node(graph, names, "MatMul", [af, bf], [mm], base=f"{node.name}_float")
        node.outputs.clear()
        round_cast_int32(graph, names, mm, out)
        return True
