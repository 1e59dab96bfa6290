"""``SequenceConstruct`` followed by ``ConcatFromSequence`` -> ``Concat`` (TensorRT has no sequences).

With ``new_axis=1`` every input is first given the new axis with ``Unsqueeze`` (same ``axis``
value, which ONNX interprets against the output rank in both ops).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const, producer
from trtq.surgery.rule import Match, Rule, register_rule


@register_rule
class SequenceToConcat(Rule):
    name = "sequence_to_concat"
    summary = "SequenceConstruct + ConcatFromSequence -> Concat (with Unsqueeze for new_axis=1)"
    order = 50
    rewrites = ("SequenceConstruct", "ConcatFromSequence")

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "ConcatFromSequence" or not node.inputs:
                continue
            seq = node.inputs[0]
            src = producer(seq)
            if src is None or src.op != "SequenceConstruct" or len(seq.outputs) != 1 or seq in graph.outputs:
                continue
            out.append(self._match([node, src], "sequence ops are not supported by TensorRT's ONNX parser"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        cfs, sc = found
        names = NameMaker(graph)
        axis = int(cfs.attrs["axis"])
        parts = list(sc.inputs)
        if int(cfs.attrs.get("new_axis", 0)):
            expanded = []
            for part in parts:
                u = gs.Variable(names(f"{part.name}_unsqueezed"), dtype=part.dtype)
                if graph.opset >= 13:
                    add_node(
                        graph,
                        names,
                        "Unsqueeze",
                        [part, const(names, "unsqueeze_axes", np.array([axis], np.int64))],
                        [u],
                    )
                else:
                    add_node(graph, names, "Unsqueeze", [part], [u], {"axes": [axis]})
                expanded.append(u)
            parts = expanded
        result = cfs.outputs[0]
        cfs.outputs.clear()
        sc.outputs.clear()
        add_node(graph, names, "Concat", parts, [result], {"axis": axis}, base=f"{cfs.name}_concat")
        return True
