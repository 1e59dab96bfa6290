"""Inline calls of local functions whose bodies hold nodes TensorRT rejects.

The parser imports local functions by expanding them, so inlining changes nothing for it, but
it brings the body into the main graph where the other rules can rewrite it. Done with
``onnx.inliner.inline_selected_functions``; the graph is rebuilt in place.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx.inliner import inline_selected_functions

from trtq.surgery.graph_util import find_node
from trtq.surgery.rule import Match, Rule, register_rule


def _body_has_errors(fn: gs.Function) -> bool:
    """True when the body holds an op TensorRT's table rejects (op-level facts only)."""
    from trtq.surgery.check import node_issues
    from trtq.surgery.scope import Scope

    scope = Scope(0)
    for node in fn.nodes:
        proto = onnx.helper.make_node(node.op, [], [], domain=node.domain or "")
        if any(sev == "error" for sev, _ in node_issues(proto, scope, {})):
            return True
    return False


@register_rule
class InlineLocalFunctions(Rule):
    name = "inline_local_functions"
    summary = "inline local functions whose body has unsupported nodes, so other rules can fix them"
    order = 0

    def match(self, graph: gs.Graph) -> list[Match]:
        bad = {(f.domain, f.name) for f in getattr(graph, "functions", []) if _body_has_errors(f)}
        return [
            self._match([n], f"calls local function {n.domain}.{n.op} whose body TensorRT rejects",
                        function=f"{n.domain}.{n.op}", key=(n.domain, n.op))
            for n in graph.nodes
            if (n.domain or "", n.op) in bad
        ]  # fmt: skip

    def apply(self, graph: gs.Graph, match: Match) -> bool:
        if find_node(graph, match.nodes[0]) is None:
            return False
        model = gs.export_onnx(graph, do_type_check=False)
        model = inline_selected_functions(model, [match.data["key"]])
        fresh = gs.import_onnx(model)
        graph.nodes = fresh.nodes
        graph.inputs = fresh.inputs
        graph.outputs = fresh.outputs
        graph.functions = fresh.functions
        return True
