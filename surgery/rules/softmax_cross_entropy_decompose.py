"""``SoftmaxCrossEntropyLoss`` -> ``LogSoftmax`` over the class axis, then the negative
log-likelihood of :mod:`trtq.surgery.rules._losses` (exact up to the order of summation).

The operator is defined as exactly that composition: ``log_prob = LogSoftmax(scores, axis=1)``
(its optional second output) followed by ``NegativeLogLikelihoodLoss`` with the same weights,
reduction and ignore_index. Fires on FP32 scores with an INT32/INT64 label from opset 13 on, where
``LogSoftmax`` works on one axis of any rank (before 13 it flattens the trailing axes, so only
rank-2 scores are taken there).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._losses import REDUCTIONS, nll
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype
from trtq.surgery.rules.nll_loss_decompose import INDEX_TYPES


def _eligible(node: gs.Node, opset: int) -> bool:
    if node.op != "SoftmaxCrossEntropyLoss" or len(node.inputs) < 2:
        return False
    shape = getattr(node.inputs[0], "shape", None)
    return (
        np_dtype(node.inputs[0]) == np.dtype(np.float32)
        and np_dtype(node.inputs[1]) in INDEX_TYPES
        and node.attrs.get("reduction", "mean") in REDUCTIONS
        and shape is not None
        and (opset >= 13 or len(shape) == 2)
    )


@register_rule
class SoftmaxCrossEntropyDecompose(Rule):
    name = "softmax_cross_entropy_decompose"
    summary = "SoftmaxCrossEntropyLoss -> LogSoftmax + GatherElements + Where + ReduceSum/Div"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("SoftmaxCrossEntropyLoss",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "SoftmaxCrossEntropyLoss is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if _eligible(n, graph.opset)
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        scores, labels, weight = node.inputs[0], node.inputs[1], input_at(node, 2)
        reduction = node.attrs.get("reduction", "mean")
        ignore = node.attrs.get("ignore_index")
        outs = detach(graph, node)
        b = Builder(graph, node.name)
        log_prob_out = outs[1] if len(outs) > 1 and outs[1].name else None
        log_prob = b.op("LogSoftmax", [scores], np.float32, {"axis": 1}, out=log_prob_out)
        nll(b, log_prob, labels, weight, reduction, None if ignore is None else int(ignore), outs[0])
        return True
