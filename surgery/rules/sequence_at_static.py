"""``SequenceAt`` with a constant position on a statically known sequence -> the element itself.

Fires when the sequence resolves (see :mod:`trtq.surgery.rules._sequences`: ``SequenceConstruct``,
``SequenceEmpty``, ``SplitToSequence`` with a static length and constant split,
``SequenceInsert``/``SequenceErase`` at constant positions) and the position is a constant inside
it (negative positions count from the end). The output is ``Identity`` of the element tensor or the
``Slice`` (+ ``Squeeze``) ``SplitToSequence`` would have cut: the same values, so it is exact.
The sequence ops are removed once nothing else reads them.
"""

from __future__ import annotations

from typing import ClassVar

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._sequences import PRODUCERS, removable, resolve
from trtq.surgery.rules._tensor_ops import Builder, detach


@register_rule
class SequenceAtStatic(Rule):
    name = "sequence_at_static"
    summary = "SequenceAt(constant position) on a static sequence -> Identity / Slice of the element"
    order = 45
    rewrites: ClassVar[tuple[str, ...]] = ("SequenceAt", *PRODUCERS)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "SequenceAt" or len(node.inputs) != 2:
                continue
            chain: list[gs.Node] = []
            elements = resolve(node.inputs[0], chain)
            pos = constant_value(node.inputs[1])
            if elements is None or pos is None or pos.size != 1:
                continue
            index = int(pos.reshape(-1)[0])
            index = index + len(elements) if index < 0 else index
            if not 0 <= index < len(elements):
                continue
            out.append(self._match([node, *removable(chain, graph)],
                                   "sequence ops are not supported by TensorRT's ONNX parser", index=index))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        element = resolve(node.inputs[0])[match.data["index"]]  # type: ignore[index]
        (y,) = detach(graph, node)
        element.build(Builder(graph, node.name), y)
        return True
