"""``Compress`` -> ``Gather`` of the positions where the condition is true.

``Compress(x, condition, axis)`` keeps the slices of ``x`` along ``axis`` (of ``x`` flattened when
``axis`` is absent) whose condition is true; the condition may be shorter than the axis (the rest
is dropped). The rule gathers those positions: a constant index list when ``condition`` is a
constant (an all-false condition gives an empty selection), otherwise
``Reshape(NonZero(Cast(condition, FLOAT)), [-1])``, which lists the true positions in increasing
order, as ``Compress`` keeps them (TensorRT imports ``NonZero`` on FP32, with a data-dependent
output size). Gathering copies the selected slices, so the result is exact.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach


@register_rule
class CompressToGather(Rule):
    name = "compress_to_gather"
    summary = "Compress -> Gather of the true positions (constant, or NonZero of the condition)"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("Compress",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "Compress is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "Compress" and len(n.inputs) == 2
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x, condition = node.inputs
        axis = node.attrs.get("axis")
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        i64 = np.dtype(np.int64)
        value = constant_value(condition)
        if value is not None:
            positions: gs.Tensor = b.const("positions", np.flatnonzero(value.reshape(-1)).astype(np.int64))
        else:
            as_float = b.cast(condition, np.float32)
            positions = b.reshape(b.op("NonZero", [as_float], i64), [-1])
        if axis is None:
            x = b.reshape(x, [-1])
            axis = 0
        b.op("Gather", [x, positions], x.dtype, {"axis": int(axis)}, out=y)
        return True
