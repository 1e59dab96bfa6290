"""``ConcatFromSequence`` of a statically known sequence -> ``Concat`` of its elements.

Fires when the sequence resolves (see :mod:`trtq.surgery.rules._sequences`) to at least one
element and is not the plain ``SequenceConstruct`` -> ``ConcatFromSequence`` pair that
``sequence_to_concat`` rewrites. Each element is the tensor itself or the slice ``SplitToSequence``
cut; with ``new_axis=1`` each gets the new axis with ``Unsqueeze`` first (``axis`` is read against
the output rank in both ops). Concatenation copies values, so the result is exact. The sequence
ops are removed once nothing else reads them.
"""

from __future__ import annotations

from typing import ClassVar

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import producer
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._sequences import PRODUCERS, removable, resolve
from trtq.surgery.rules._tensor_ops import Builder, detach


def _plain_pair(node: gs.Node, graph: gs.Graph) -> bool:
    """The pattern ``sequence_to_concat`` already rewrites."""
    seq = node.inputs[0]
    src = producer(seq)
    return (
        src is not None
        and src.op == "SequenceConstruct"
        and len(seq.outputs) == 1
        and seq not in graph.outputs
    )


@register_rule
class ConcatFromStaticSequence(Rule):
    name = "concat_from_static_sequence"
    summary = "ConcatFromSequence of a static sequence (split/insert/erase) -> Concat of its elements"
    order = 55
    rewrites: ClassVar[tuple[str, ...]] = ("ConcatFromSequence", *PRODUCERS)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "ConcatFromSequence" or not node.inputs or _plain_pair(node, graph):
                continue
            chain: list[gs.Node] = []
            elements = resolve(node.inputs[0], chain)
            if elements:
                out.append(self._match([node, *removable(chain, graph)],
                                       "sequence ops are not supported by TensorRT's ONNX parser"))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        elements = resolve(node.inputs[0])
        axis = int(node.attrs["axis"])
        new_axis = int(node.attrs.get("new_axis", 0))
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        parts = [e.build(b) for e in elements]  # type: ignore[union-attr]
        if new_axis:
            parts = [b.unsqueeze(p, [axis]) for p in parts]
        b.op("Concat", parts, y.dtype, {"axis": axis}, out=y)
        return True
