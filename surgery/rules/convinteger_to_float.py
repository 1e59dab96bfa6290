"""``ConvInteger`` -> ``Conv`` in float32 on zero-point-shifted operands, rounded and cast to INT32.

Exact when the reduction length ``C_in/group * prod(kernel)`` is at most 258 (see
:mod:`trtq.surgery.rules._integer_ops`); the rule does not match otherwise. The weights must be a
constant so the float weights are computed once.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._integer_ops import (
    EXACT_MAX_TERMS,
    round_cast_int32,
    to_float_minus_zp,
    zero_point_value,
)


def _terms(w: np.ndarray) -> int:
    return int(np.prod(w.shape[1:]))


@register_rule
class ConvIntegerToFloat(Rule):
    name = "convinteger_to_float"
    summary = "ConvInteger -> float Conv + Round + Cast(INT32), exact for reductions <= 258 terms"
    order = 60
    rewrites = ("ConvInteger",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "ConvInteger":
                continue
            w = constant_value(input_at(node, 1))
            xzp, wzp = zero_point_value(node, 2), zero_point_value(node, 3)
            if w is None or xzp is None or wzp is None or xzp.size != 1 or _terms(w) > EXACT_MAX_TERMS:
                continue
            out.append(self._match([node], "ConvInteger is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        w = input_at(node, 1)
        wzp = zero_point_value(node, 3)
        wshape = (-1,) + (1,) * (constant_value(w).ndim - 1) if wzp.size > 1 else None
        xf = to_float_minus_zp(graph, names, node.inputs[0], zero_point_value(node, 2).reshape(()))
        wf = to_float_minus_zp(graph, names, w, wzp, wshape)
        out = node.outputs[0]
        conv_out = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
        attrs = dict(node.attrs)
        add_node(graph, names, "Conv", [xf, wf], [conv_out], attrs, base=f"{node.name}_float")
        node.outputs.clear()
        round_cast_int32(graph, names, conv_out, out)
        return True
