"""``NegativeLogLikelihoodLoss`` -> ``GatherElements`` of the target class, weighted, masked and
reduced (see :mod:`trtq.surgery.rules._losses` for the construction and why it is exact).

Fires on FP32 input of rank >= 2 with an INT32/INT64 target, any ``reduction`` (none, sum,
mean), with or without ``weight`` and ``ignore_index``. Inference graphs carry these losses when a
model is exported with its loss head; TensorRT has no import for them.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._losses import REDUCTIONS, nll
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype

INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


@register_rule
class NLLLossDecompose(Rule):
    name = "nll_loss_decompose"
    summary = "NegativeLogLikelihoodLoss -> GatherElements + Where + ReduceSum/Div"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("NegativeLogLikelihoodLoss",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "NegativeLogLikelihoodLoss is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "NegativeLogLikelihoodLoss"
            and len(n.inputs) >= 2
            and np_dtype(n.inputs[0]) == np.dtype(np.float32)
            and np_dtype(n.inputs[1]) in INDEX_TYPES
            and n.attrs.get("reduction", "mean") in REDUCTIONS
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x, target, weight = node.inputs[0], node.inputs[1], input_at(node, 2)
        reduction = node.attrs.get("reduction", "mean")
        ignore = node.attrs.get("ignore_index")
        (y,) = detach(graph, node)
        nll(
            Builder(graph, node.name),
            x,
            target,
            weight,
            reduction,
            None if ignore is None else int(ignore),
            y,
        )
        return True
