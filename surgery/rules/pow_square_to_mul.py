"""``Pow(x, 2)`` -> ``Mul(x, x)``.

x*x is the same value (one correctly rounded product, as pow(x, 2) is; ONNX Runtime gives
identical bits). TensorRT imports Pow as a general element-wise power layer; a product is the
simpler layer for fusion and for FP16, and it is what the LayerNorm pattern matcher also accepts.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value, set_io
from trtq.surgery.rule import Match, Rule, register_rule


def _is_square(node: gs.Node) -> bool:
    if node.op != "Pow" or len(node.inputs) != 2:
        return False
    e = constant_value(node.inputs[1])
    return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0


@register_rule
class PowSquareToMul(Rule):
    name = "pow_square_to_mul"
    summary = "Pow(x, 2) -> Mul(x, x)"
    reports = True
    order = 95

    def match(self, graph: gs.Graph) -> list[Match]:
        return [self._match([n], "Pow(x, 2): a general power layer where Mul(x, x) is exact")
                for n in graph.nodes if _is_square(n)]  # fmt: skip

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        if not _is_square(found[0]):
            return False
        node = found[0]
        x = node.inputs[0]
        node.op = "Mul"
        set_io(node.inputs, [x, x])
        return True
