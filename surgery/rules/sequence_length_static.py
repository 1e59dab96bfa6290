"""``SequenceLength`` of a statically known sequence -> a constant INT64 scalar.

Fires when the sequence resolves (see :mod:`trtq.surgery.rules._sequences`); its length is then a
number known from the graph, so the constant is exactly what ``SequenceLength`` returns. The
sequence ops are removed once nothing else reads them.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._sequences import PRODUCERS, removable, resolve
from trtq.surgery.rules._tensor_ops import Builder, detach


@register_rule
class SequenceLengthStatic(Rule):
    name = "sequence_length_static"
    summary = "SequenceLength of a static sequence -> constant"
    order = 45
    rewrites: ClassVar[tuple[str, ...]] = ("SequenceLength", *PRODUCERS)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "SequenceLength" or not node.inputs:
                continue
            chain: list[gs.Node] = []
            elements = resolve(node.inputs[0], chain)
            if elements is not None:
                out.append(self._match([node, *removable(chain, graph)],
                                       "sequence ops are not supported by TensorRT's ONNX parser",
                                       length=len(elements)))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        value = gs.Constant(b.names(f"{node.name}_value"), np.array(match.data["length"], np.int64))
        b.op("Constant", [], out=y, attrs={"value": value})
        return True
