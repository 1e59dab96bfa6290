"""``Optional`` / ``OptionalHasElement`` / ``OptionalGetElement`` whose presence is known from the
graph itself -> a constant bool and ``Identity``.

Fires on:
- ``OptionalHasElement`` whose input is made by an ``Optional`` node (present exactly when that
  node has an input) or is omitted (opset 18: an absent input has no element) -> a constant;
- ``OptionalGetElement`` whose input is made by an ``Optional`` node that has an input ->
  ``Identity`` of that input (the element is the very tensor wrapped);
and names the ``Optional`` node as rewritten when every use of it is one of those (it is then
unused and removed; one that is a graph output or feeds anything else stays). Nothing is
computed differently: the values are the ones the optional wraps, so the rewrite is exact.
Optionals that cross a graph input, an ``If``/``Loop`` boundary or come from other ops are not
statically known and are left alone.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import input_at, producer
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach

_USERS = ("OptionalHasElement", "OptionalGetElement")


def _source(node: gs.Node) -> gs.Node | None:
    """The ``Optional`` node making ``node``'s input, or None."""
    t = input_at(node, 0)
    src = producer(t) if t is not None else None
    return src if src is not None and src.op == "Optional" else None


def _present(node: gs.Node) -> bool | None:
    """Whether the optional read by ``node`` holds an element (None when not statically known)."""
    if input_at(node, 0) is None:
        return False if node.op == "OptionalHasElement" else None
    src = _source(node)
    return None if src is None else input_at(src, 0) is not None


@register_rule
class OptionalStatic(Rule):
    name = "optional_static"
    summary = "Optional*/OptionalHasElement/OptionalGetElement with known presence -> constant / Identity"
    order = 40
    rewrites: ClassVar[tuple[str, ...]] = ("Optional", "OptionalHasElement", "OptionalGetElement")

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op not in _USERS:
                continue
            present = _present(node)
            if present is None or (node.op == "OptionalGetElement" and not present):
                continue
            nodes = [node]
            src = _source(node)
            if src is not None and _wholly_static(src, graph):
                nodes.append(src)
            out.append(self._match(nodes, "optional ops are not supported by TensorRT's ONNX parser",
                                   present=present))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        element = input_at(_source(node), 0) if _source(node) is not None else None
        op = node.op
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        if op == "OptionalHasElement":
            value = gs.Constant(b.names(f"{node.name}_value"), np.array(bool(match.data["present"])))
            b.op("Constant", [], out=y, attrs={"value": value})
        else:
            b.identity(element, y)
        return True


def _wholly_static(src: gs.Node, graph: gs.Graph) -> bool:
    """Every use of the ``Optional`` node's output is a user this rule rewrites."""
    out = src.outputs[0]
    return out not in graph.outputs and all(
        u.op in _USERS and (u.op == "OptionalHasElement" or input_at(src, 0) is not None) for u in out.outputs
    )
