"""``TopK`` with constant K above TensorRT's limit (3840) -> rounds of TopK with K <= 3840.

Round r takes the top ``min(3840, K - 3840 r)`` of what is left, then masks the elements it took
with -inf (largest) / +inf (smallest) with ``ScatterElements``; values and indices of the
rounds are concatenated along ``axis``. TopK orders equal values by index, and masked elements
sort after every remaining one, so the result equals one TopK of K exactly, provided the input
has no -inf/+inf (or NaN) among the elements selected. Integer inputs use the type's min/max as
the mask with the same proviso. ``sorted`` must be 1.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery import support_table
from trtq.surgery.graph_util import NameMaker, add_node, const, constant_value
from trtq.surgery.rule import Match, Rule, register_rule


def _mask_value(dtype, largest: bool) -> np.ndarray:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return np.array(-np.inf if largest else np.inf, dt)
    info = np.iinfo(dt)
    return np.array(info.min if largest else info.max, dt)


@register_rule
class TopKSplit(Rule):
    name = "topk_split"
    summary = f"TopK with K > {support_table.TOPK_MAX_K} -> rounds of TopK + mask, concatenated"
    order = 80
    rewrites = ("TopK",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        out = []
        for node in graph.nodes:
            if node.op != "TopK" or int(node.attrs.get("sorted", 1)) != 1:
                continue
            k = constant_value(node.inputs[1])
            if k is None or k.size != 1 or node.inputs[0].dtype is None:
                continue
            if int(k.reshape(-1)[0]) > support_table.TOPK_MAX_K:
                out.append(self._match([node], f"K = {int(k.reshape(-1)[0])} exceeds TensorRT's TopK limit"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        names = NameMaker(graph)
        limit = support_table.TOPK_MAX_K
        x = node.inputs[0]
        k_total = int(constant_value(node.inputs[1]).reshape(-1)[0])
        axis = int(node.attrs.get("axis", -1))
        largest = int(node.attrs.get("largest", 1))
        mask = _mask_value(x.dtype, bool(largest))
        values_out, indices_out = node.outputs
        value_parts, index_parts = [], []
        current = x
        taken = 0
        while taken < k_total:
            k = min(limit, k_total - taken)
            v = gs.Variable(names(f"{values_out.name}_part"), dtype=x.dtype)
            i = gs.Variable(names(f"{indices_out.name}_part"), dtype=np.int64)
            attrs = {"axis": axis, "largest": largest, "sorted": 1}
            add_node(
                graph,
                names,
                "TopK",
                [current, const(names, "topk_k", np.array([k], np.int64))],
                [v, i],
                attrs,
            )
            value_parts.append(v)
            index_parts.append(i)
            taken += k
            if taken < k_total:
                shape = gs.Variable(names(f"{i.name}_shape"), dtype=np.int64)
                fill = gs.Variable(names(f"{i.name}_mask"), dtype=x.dtype)
                masked = gs.Variable(names(f"{x.name}_masked"), dtype=x.dtype)
                add_node(graph, names, "Shape", [i], [shape])
                add_node(
                    graph,
                    names,
                    "ConstantOfShape",
                    [shape],
                    [fill],
                    {"value": gs.Constant(names("mask"), mask.reshape(1))},
                )
                add_node(graph, names, "ScatterElements", [current, i, fill], [masked], {"axis": axis})
                current = masked
        node.outputs.clear()
        add_node(graph, names, "Concat", value_parts, [values_out], {"axis": axis})
        add_node(graph, names, "Concat", index_parts, [indices_out], {"axis": axis})
        node.inputs.clear()
        graph.nodes.remove(node)
        return True
