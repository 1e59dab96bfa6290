"""``Pow(x, 2)`` -> ``Mul(x, x)``.

x*x is the same value (one correctly rounded product, as pow(x, 2) is; ONNX Runtime gives
identical bits). TensorRT imports Pow as a general element-wise power layer; a product is the
simpler layer for fusion and for FP16, and it is what the LayerNorm pattern matcher also accepts.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import is_square, set_io
from trtq.surgery.rule import Match, Rule, register_rule


@register_rule
class PowSquareToMul(Rule):
    name = "pow_square_to_mul"
    summary = "Pow(x, 2) -> Mul(x, x)"
    reports = True
    order = 95
    rewrites = ("Pow",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [self._match([n], "Pow(x, 2): a general power layer where Mul(x, x) is exact")
                for n in graph.nodes if is_square(n)]  # fmt: skip

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        if not is_square(found[0]):
            return False
        node = found[0]
        x = node.inputs[0]
        node.op = "Mul"
        set_io(node.inputs, [x, x])
        return True
