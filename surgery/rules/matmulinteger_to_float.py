"""``MatMulInteger`` -> ``MatMul`` in float32 on zero-point-shifted operands, rounded and cast to INT32.

Exact when the inner dimension ``K`` is known and at most 258 (see
:mod:`trtq.surgery.rules._integer_ops`). ``a_zero_point`` must be a scalar constant;
``b_zero_point`` may be per column (it broadcasts along the last axis of B).

Note: for uint8 A times int8 B, ONNX Runtime's x86 kernel saturates intermediate int16 sums
(seen with A = 255), so its own result departs from the ONNX formula that this rewrite computes
exactly; ``surgery fix`` then refuses to write, and ``--no-verify`` is the way through.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._integer_ops import (
    EXACT_MAX_TERMS,
    round_cast_int32,
    to_float_minus_zp,
    zero_point_value,
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
    summary = "MatMulInteger -> float MatMul + Round + Cast(INT32), exact for K <= 258"
    order = 61
    rewrites = ("MatMulInteger",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "MatMulInteger":
                continue
            k = _inner_dim(node)
            azp, bzp = zero_point_value(node, 2), zero_point_value(node, 3)
            if k is None or k > EXACT_MAX_TERMS or azp is None or bzp is None or azp.size != 1:
                continue
            out.append(self._match([node], "MatMulInteger is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        af = to_float_minus_zp(graph, names, node.inputs[0], zero_point_value(node, 2).reshape(()))
        bf = to_float_minus_zp(graph, names, node.inputs[1], zero_point_value(node, 3))
        out = node.outputs[0]
        mm = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
        add_node(graph, names, "MatMul", [af, bf], [mm], base=f"{node.name}_float")
        node.outputs.clear()
        round_cast_int32(graph, names, mm, out)
        return True
