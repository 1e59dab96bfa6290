"""``SequenceAt`` on a statically known sequence -> the element itself (constant position) or a
``Gather`` from the stacked elements (run-time position, elements of one static shape).

Fires when the sequence resolves (see :mod:`trtq.surgery.rules._sequences`: ``SequenceConstruct``,
``SequenceEmpty``, ``SplitToSequence`` with a static length and constant split,
``SequenceInsert``/``SequenceErase`` at constant positions) and the position is a constant inside
it (negative positions count from the end). The output is ``Identity`` of the element tensor or the
``Slice`` (+ ``Squeeze``) ``SplitToSequence`` would have cut: the same values, so it is exact.
With a run-time position, when every element has the same static shape and type (as when a
tensor is split into equal parts), the elements are stacked on a new axis 0 and ``Gather`` picks
one with the position as a scalar index; ``Gather`` accepts negative indices counting from the end
as ``SequenceAt`` does, so the result is exact for every position ``SequenceAt`` accepts.
The sequence ops are removed once nothing else reads them.
"""

from __future__ import annotations

from typing import ClassVar

import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._sequences import PRODUCERS, Element, removable, resolve
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype


@register_rule
class SequenceAtStatic(Rule):
    name = "sequence_at_static"
    summary = "SequenceAt on a static sequence -> the element (constant position) / Gather of the stack"
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
            if elements is None or (pos is not None and pos.size != 1):
                continue
            index = None if pos is None else int(pos.reshape(-1)[0])
            if index is None and not _stackable(elements):
                continue
            if index is not None:
                index = index + len(elements) if index < 0 else index
                if not 0 <= index < len(elements):
                    continue
            out.append(self._match([node, *removable(chain, graph)],
                                   "sequence ops are not supported by TensorRT's ONNX parser", index=index))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        elements = resolve(node.inputs[0])
        assert elements is not None
        position = node.inputs[1]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        if match.data["index"] is not None:
            elements[match.data["index"]].build(b, y)
            return True
        stacked = b.op("Concat", [b.unsqueeze(e.build(b), [0]) for e in elements], y.dtype, {"axis": 0})
        b.op("Gather", [stacked, position], y.dtype, {"axis": 0}, out=y)
        return True


def _stackable(elements: list[Element]) -> bool:
    shapes = {e.shape() for e in elements}
    dtypes = {np_dtype(e.tensor) for e in elements}
    return bool(elements) and len(shapes) == 1 and None not in shapes and len(dtypes) == 1
