"""``BitwiseAnd``/``BitwiseOr``/``BitwiseXor`` on the integer types TensorRT has -> arithmetic on
the operands' bits.

Fires on INT8, INT32, INT64 and UINT8 (TensorRT allows UINT8 only at network inputs/outputs)
operands; INT8/UINT8 are computed in INT32 and cast back. Bits come from integer division of a
non-negative value only (truncating and flooring division agree there, and no ``Mod`` is used:
ONNX Runtime's INT64 ``Mod`` goes through double and loses low bits): for a signed type of width
``w``, ``u = x`` if ``x >= 0`` else ``u = ~x = -1 - x``; with ``q_k = u / 2^k`` (``k < w-1``),
bit ``k`` of ``u`` is ``q_k - 2 (q_k / 2)`` and bit ``k`` of ``x`` is that bit flipped when ``x < 0``;
the sign bit ``w-1`` is ``x < 0``. UINT8 uses bits 0..7 of ``x`` and has no sign bit. The bits are laid out on a new last axis
(the operands broadcast as before); And is ``a*b``, Or is ``max(a, b)``, Xor is ``|a - b|``; the result is
``sum_k bit_k * 2^k`` (summed by adding halves of the bit axis) with weight ``-2^(w-1)`` for a signed type's sign bit (two's complement).
No intermediate leaves the type's range (``-1 - x`` cannot overflow, ``2^(w-2)`` is the largest
divisor, the non-negative terms sum to at most ``2^(w-1) - 1`` and adding the sign term cannot
underflow), so the
result is exact for every input. Other widths (INT16, UINT16/32/64) are not TensorRT types.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype

_COMBINE = {"BitwiseAnd": "Mul", "BitwiseOr": "Max", "BitwiseXor": "Sub"}

# element type -> (type computed in, number of value bits below the sign bit, signed)
_LAYOUT = {
    np.dtype(np.int8): (np.dtype(np.int32), 7, True),
    np.dtype(np.uint8): (np.dtype(np.int32), 8, False),
    np.dtype(np.int32): (np.dtype(np.int32), 31, True),
    np.dtype(np.int64): (np.dtype(np.int64), 63, True),
}


def _bits(b: Builder, x: gs.Tensor, work: np.dtype, low: int, signed: bool) -> gs.Tensor:
    """``x``'s bits, least significant first, on a new last axis (sign bit last when ``signed``)."""
    powers = b.const("powers", (2 ** np.arange(low, dtype=np.int64)).astype(work))
    two = b.const("two", np.array(2, work))
    if signed:
        negative = b.op("Less", [x, b.const("zero", np.array(0, work))], np.dtype(bool))
        flipped = b.op("Sub", [b.const("minus_one", np.array(-1, work)), x], work)
        x = b.op("Where", [negative, flipped, x], work)  # ~x for negative x: never negative
    q = b.op("Div", [b.unsqueeze(x, [-1]), powers], work)  # floor(u / 2^k), u >= 0
    bits = b.op("Sub", [q, b.op("Mul", [two, b.op("Div", [q, two], work)], work)], work)
    if not signed:
        return bits
    sign = b.unsqueeze(b.cast(negative, work), [-1])
    bits = b.op("Abs", [b.op("Sub", [bits, sign], work)], work)  # a negative x's bits are ~x's, flipped
    return b.op("Concat", [bits, sign], work, {"axis": -1})


def _sum_halves(b: Builder, terms: gs.Tensor, count: int, work: np.dtype) -> gs.Tensor:
    """Sum the last axis (``count`` a power of two) by adding halves: exact integer Adds (ONNX
    Runtime's INT64 ``ReduceSum`` rounds through double)."""
    while count > 1:
        count //= 2
        halves = [
            b.op("Slice", [terms, *(b.const(k, np.array([v], np.int64)) for k, v in
                                    (("start", start), ("end", start + count), ("axis", -1)))], work)
            for start in (0, count)
        ]  # fmt: skip
        terms = b.op("Add", halves, work)
    return terms


@register_rule
class BitwiseToBits(Rule):
    name = "bitwise_to_bits"
    summary = "BitwiseAnd/Or/Xor on INT8/INT32/INT64/UINT8 -> Mul/Max/|Sub| on the bits, summed back"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("BitwiseAnd", "BitwiseOr", "BitwiseXor")

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], f"{n.op} is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op in _COMBINE
            and len(n.inputs) == 2
            and np_dtype(n.inputs[0]) in _LAYOUT
            and np_dtype(n.inputs[1]) == np_dtype(n.inputs[0])
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        a, c = node.inputs
        dtype = np_dtype(a)
        work, low, signed = _LAYOUT[dtype]
        op = node.op
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        if work != dtype:
            a, c = b.cast(a, work), b.cast(c, work)
        bits_a = _bits(b, a, work, low, signed)
        bits_c = _bits(b, c, work, low, signed)
        both = b.op(_COMBINE[op], [bits_a, bits_c], work)
        if op == "BitwiseXor":
            both = b.op("Abs", [both], work)
        weights = [2**k for k in range(low)] + ([-(2**low)] if signed else [])
        terms = b.op("Mul", [both, b.const("weights", np.array(weights, np.int64).astype(work))], work)
        total = b.squeeze(_sum_halves(b, terms, len(weights), work), [-1])
        if work == dtype:
            b.identity(total, y)
        else:
            b.cast(total, dtype, out=y)
        return True
