"""``BitShift`` on UINT8 -> INT32 ``Mul``/``Div`` by a power of two looked up from the shift.

ONNX defines ``BitShift`` for unsigned types only, and UINT8 is the only one TensorRT has (at
network inputs/outputs); UINT16/32/64 tensors cannot exist in a TensorRT network, so those are
left alone. Both operands are cast to INT32; the shift ``s`` (any value 0..255, a tensor or a
constant) indexes a 256-entry constant table with ``Gather``:
- LEFT: ``(x * t[s]) mod 256`` with ``t[s] = 2^s`` for ``s < 8`` and 0 otherwise; the product is at
  most ``255 * 128``, so it is exact, and ``mod 256`` drops the bits shifted out as UINT8 does;
- RIGHT: ``x / t[s]`` with ``t[s] = 2^s`` for ``s < 8`` and 256 otherwise; ``x >= 0``, so integer
  division is the floor, which is the shift; a shift of 8 or more gives 0 either way,
as ONNX Runtime and the ONNX reference do. The INT32 result is in 0..255 and cast back to UINT8.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype

_SHIFTS = np.arange(256)
_LEFT = np.where(_SHIFTS < 8, 2 ** np.minimum(_SHIFTS, 7), 0).astype(np.int32)
_RIGHT = np.where(_SHIFTS < 8, 2 ** np.minimum(_SHIFTS, 7), 256).astype(np.int32)


@register_rule
class BitShiftUint8(Rule):
    name = "bitshift_uint8"
    summary = "BitShift on UINT8 -> INT32 Mul (mod 256) / Div by a looked-up power of two"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("BitShift",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "BitShift is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "BitShift"
            and len(n.inputs) == 2
            and all(np_dtype(t) == np.dtype(np.uint8) for t in n.inputs)
            and n.attrs.get("direction") in ("LEFT", "RIGHT")
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x, s = node.inputs
        left = node.attrs["direction"] == "LEFT"
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        i32 = np.dtype(np.int32)
        table = b.const("powers_of_two", _LEFT if left else _RIGHT)
        factor = b.op("Gather", [table, b.cast(s, i32)], i32, {"axis": 0})
        xw = b.cast(x, i32)
        if left:
            moved = b.op("Mul", [xw, factor], i32)
            result = b.op("Mod", [moved, b.const("byte", np.array(256, np.int32))], i32, {"fmod": 0})
        else:
            result = b.op("Div", [xw, factor], i32)
        b.cast(result, np.uint8, out=y)
        return True
