"""``ScatterND`` with ``reduction`` add/mul/max/min and constant, duplicate-free indices ->
``GatherND`` + the element-wise op + ``ScatterND`` with ``reduction='none'``.

With unique indices each target element is combined with exactly one update, so
``data[idx] = op(data[idx], update)`` is what the reduction computes, in the same float arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value
from trtq.surgery.rule import Match, Rule, register_rule

_OPS = {"add": "Add", "mul": "Mul", "max": "Max", "min": "Min"}


def _unique(indices: np.ndarray) -> bool:
    rows = indices.reshape(-1, indices.shape[-1]) if indices.ndim else indices.reshape(1, 1)
    return len({tuple(r) for r in rows.tolist()}) == rows.shape[0]


@register_rule
class ScatterNDReduction(Rule):
    name = "scatternd_reduction"
    summary = "ScatterND(reduction=add|mul|max|min) with unique constant indices -> GatherND + op + ScatterND"
    order = 70
    rewrites = ("ScatterND",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "ScatterND" or node.attrs.get("reduction", "none") not in _OPS:
                continue
            idx = constant_value(node.inputs[1])
            if idx is not None and idx.size and _unique(idx):
                out.append(
                    self._match([node], f"ScatterND reduction {node.attrs['reduction']!r} is not supported")
                )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        data, indices, updates = node.inputs[:3]
        current = gs.Variable(names(f"{node.name}_current"), dtype=data.dtype)
        combined = gs.Variable(names(f"{node.name}_combined"), dtype=data.dtype)
        add_node(graph, names, "GatherND", [data, indices], [current])
        add_node(graph, names, _OPS[node.attrs["reduction"]], [current, updates], [combined])
        node.inputs[2] = combined
        node.attrs["reduction"] = "none"
        return True
