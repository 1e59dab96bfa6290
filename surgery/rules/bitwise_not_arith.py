"""``BitwiseNot`` on the integer types TensorRT has -> ``Sub``: ``~x = -1 - x`` (two's complement).

Fires on INT8, INT32 and INT64 inputs, and on UINT8 (which TensorRT allows only at network
inputs/outputs). For every signed ``x`` of width ``w``, ``-1 - x`` lies in ``[-2^(w-1), 2^(w-1) - 1]``,
so the subtraction never overflows and equals ``~x`` bit for bit; for UINT8, ``~x = 255 - x``.
INT8 and UINT8 are computed in INT32 (TensorRT has no 8-bit integer arithmetic) and cast back,
which is exact because the result is in range. Other widths (INT16, UINT16/32/64) are not
TensorRT types and are left alone.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype

# element type -> (type computed in, the all-ones value ``~x = ones - x`` subtracts from)
WORK = {
    np.dtype(np.int8): (np.dtype(np.int32), -1),
    np.dtype(np.uint8): (np.dtype(np.int32), 255),
    np.dtype(np.int32): (np.dtype(np.int32), -1),
    np.dtype(np.int64): (np.dtype(np.int64), -1),
}


@register_rule
class BitwiseNotArith(Rule):
    name = "bitwise_not_arith"
    summary = "BitwiseNot on INT8/INT32/INT64/UINT8 -> Sub(-1 - x) (255 - x for UINT8)"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("BitwiseNot",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "BitwiseNot is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "BitwiseNot" and n.inputs and np_dtype(n.inputs[0]) in WORK
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x = node.inputs[0]
        dtype = np_dtype(x)
        work, ones = WORK[dtype]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        xw = x if work == dtype else b.cast(x, work)
        ones_c = b.const("all_ones", np.array(ones, work))
        if work == dtype:
            b.op("Sub", [ones_c, xw], work, out=y)
        else:
            b.cast(b.op("Sub", [ones_c, xw], work), dtype, out=y)
        return True
