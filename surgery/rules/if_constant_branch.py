"""Replace an ``If`` whose condition is a constant by the branch it always takes.

The branch's nodes move into the enclosing graph; each ``If`` output is written by an
``Identity`` of the branch output, so tensor names (and graph outputs) stay the same.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value
from trtq.surgery.rule import Match, Rule, register_rule


@register_rule
class IfConstantBranch(Rule):
    name = "if_constant_branch"
    summary = "If with a constant condition -> the nodes of the branch it takes"
    order = 10
    rewrites = ("If",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "If" or not node.inputs:
                continue
            cond = constant_value(node.inputs[0])
            if cond is not None and cond.size == 1:
                branch = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
                out.append(
                    self._match([node], f"If condition is constant: always takes {branch}", branch=branch)
                )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        body: gs.Graph = node.attrs[match.data["branch"]]
        names = NameMaker(graph)
        outer = graph.tensors()
        outer_ids = {id(t) for t in outer.values()}
        for tensor in body.tensors().values():  # rename branch-local tensors that clash with outer ones
            if tensor.name in outer and id(tensor) not in outer_ids:
                tensor.name = names(tensor.name)
        graph.nodes.extend(body.nodes)
        results = list(body.outputs)
        outs = list(node.outputs)
        node.outputs.clear()
        node.inputs.clear()
        for out, res in zip(outs, results, strict=True):
            add_node(graph, names, "Identity", [res], [out], base=f"{out.name}_from_branch")
        graph.nodes.remove(node)
        return True
