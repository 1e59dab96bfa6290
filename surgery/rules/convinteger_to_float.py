"""``ConvInteger`` -> ``Conv`` in float32 on zero-point-shifted operands, rounded and cast to INT32.

Exact when the reduction length ``C_in/group * prod(kernel)`` is at most 258, or when the constant
weights bound every partial sum below 2**24 (see :mod:`trtq.surgery.rules._integer_ops`); the rule
does not match otherwise. The weights must be a constant so the float weights are computed once;
``x_zero_point`` a scalar, constant or computed at run time (``quantize_dynamic`` models).
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


def _terms(w: np.ndarray) -> int:
    return int(np.prod(w.shape[1:]))


@register_rule
class ConvIntegerToFloat(Rule):
    name = "convinteger_to_float"
    summary = "ConvInteger -> float Conv + Round + Cast(INT32), exact for <= 258 terms or bounded weights"
    order = 60
    rewrites = ("ConvInteger",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "ConvInteger":
                continue
            w = constant_value(input_at(node, 1))
            xzp, wzp = zero_point_value(node, 2), zero_point_value(node, 3)
            if w is None or wzp is None or (xzp is None and not is_scalar_tensor(input_at(node, 2))):
                continue
            if xzp is not None and xzp.size != 1:
                continue
            if _terms(w) > EXACT_MAX_TERMS and not bounded_by_weights(
                w, wzp.reshape(-1) if wzp.size > 1 else wzp, 0
            ):
                continue
            out.append(self._match([node], "ConvInteger is not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        w = input_at(node, 1)
        wzp = zero_point_value(node, 3)
        wshape = (-1,) + (1,) * (constant_value(w).ndim - 1) if wzp.size > 1 else None
        xzp = zero_point_value(node, 2)
        if xzp is None:  # computed at run time (DynamicQuantizeLinear)
            xf = to_float_minus_tensor(graph, names, node.inputs[0], node.inputs[2])
        else:
            xf = to_float_minus_zp(graph, names, node.inputs[0], xzp.reshape(()))
        wf = to_float_minus_zp(graph, names, w, wzp, wshape)
        out = node.outputs[0]
        conv_out = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
        attrs = dict(node.attrs)
        add_node(graph, names, "Conv", [xf, wf], [conv_out], attrs, base=f"{node.name}_float")
        node.outputs.clear()
        round_cast_int32(graph, names, conv_out, out)
        return True
