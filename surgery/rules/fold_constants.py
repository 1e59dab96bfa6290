"""Fold constant and shape subgraphs into initializers (onnx-graphsurgeon ``fold_constants``).

Inputs that TensorRT wants as build-time constants (Reshape shapes, Unsqueeze/Squeeze axes,
Resize scales, TopK K, ...) are often computed by small subgraphs of constants and ``Shape`` of
static dimensions; folding turns them into initializers. The fold is trtq's one constant-folding
pass, :func:`trtq._core.onnx_fold.fold_constants`, with its one exclusion list
(:data:`~trtq._core.onnx_fold.NEVER_FOLD`: Q/DQ, random ops, control flow). ``Constant`` nodes
become initializers as a side effect, which does not change any value.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from trtq._core.onnx_fold import NEVER_FOLD, fold_constants
from trtq.surgery.graph_util import constant_value, find_node, is_omitted
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.support_table import CONSTANT_INPUTS


def _static(tensor: gs.Tensor) -> bool:
    shape = getattr(tensor, "shape", None)
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def foldable_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Nodes computed only from constants (``Shape``/``Size`` of statically shaped tensors count)."""
    const: set[int] = set()
    found = []
    for node in graph.nodes:  # graph.nodes is kept in topological order
        if node.op == "Constant":
            const.update(id(t) for t in node.outputs)
            continue
        if node.op in NEVER_FOLD:
            continue
        if node.op in ("Shape", "Size"):
            ok = bool(node.inputs) and _static(node.inputs[0])
        else:
            ok = bool(node.inputs) and all(
                is_omitted(t) or isinstance(t, gs.Constant) or id(t) in const or constant_value(t) is not None
                for t in node.inputs
            )
        if ok:
            const.update(id(t) for t in node.outputs)
            if not any(t in graph.outputs for t in node.outputs):
                found.append(node)
    return found


@register_rule
class FoldConstants(Rule):
    name = "fold_constants"
    summary = "fold constant and static-shape subgraphs into initializers"
    order = 20
    # inputs TensorRT wants constant, and operators only folding can remove (constant inputs)
    rewrites = (*CONSTANT_INPUTS, "MelWeightMatrix", "Unique")

    def __init__(self) -> None:
        # Nodes that a fold left in place (onnx-graphsurgeon could not evaluate them): one fold
        # per pass folds everything it can, so later matches of the same pass need no new fold.
        self._left: set[str] = set()

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in foldable_nodes(graph):
            users = {id(u): u for t in node.outputs for u in t.outputs if u.op != "Constant"}
            out.append(self._match([node, *users.values()], "computed only from constants; TensorRT wants "
                                   "some inputs (axes, K, shapes) as initializers"))  # fmt: skip
        return out

    def apply(self, graph: gs.Graph, match: Match) -> bool:
        name = match.nodes[0]
        if find_node(graph, name) is None:
            return True  # folded by this pass's fold
        if name in self._left:
            return False
        fold_constants(graph)
        self._left = {n.name for n in foldable_nodes(graph)}
        return name not in self._left
