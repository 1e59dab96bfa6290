"""Sequences whose length and elements are known from the graph, for the sequence rules.

:func:`resolve` follows a sequence tensor back through the ops that build it and returns its
elements as :class:`Element` recipes, or None when anything is not static. Known producers:
``SequenceConstruct`` (the inputs), ``SequenceEmpty`` (none), ``SplitToSequence`` with a static
length on ``axis`` and a constant or absent ``split`` (slices of the input, squeezed when
``split`` is absent and ``keepdims=0``), ``SequenceInsert``/``SequenceErase`` with a constant or
absent position (ONNX defaults: append / erase the last; negative positions count from the end).
A sequence that is a graph input, or made by ``If``/``Loop``/``SequenceMap`` etc., is not static.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value, input_at, producer
from trtq.surgery.rules._tensor_ops import Builder, static_shape

PRODUCERS = ("SequenceConstruct", "SequenceEmpty", "SplitToSequence", "SequenceInsert", "SequenceErase")


@dataclass(frozen=True)
class Element:
    """``tensor`` itself, or its slice ``[start, stop)`` on ``axis`` (squeezed when ``squeeze``)."""

    tensor: gs.Tensor
    axis: int | None = None
    start: int = 0
    stop: int = 0
    squeeze: bool = False

    def shape(self) -> tuple[int, ...] | None:
        """The element's static shape, or None."""
        full = static_shape(self.tensor)
        if full is None or self.axis is None:
            return full
        dims = list(full)
        dims[self.axis] = self.stop - self.start
        if self.squeeze:
            del dims[self.axis]
        return tuple(dims)

    def build(self, b: Builder, out: gs.Tensor | None = None) -> gs.Tensor:
        """The element as a tensor (``out`` when given: written by a new node)."""
        if self.axis is None:
            return self.tensor if out is None else b.identity(self.tensor, out)
        ints = {k: b.const(k, np.array([v], np.int64)) for k, v in
                (("start", self.start), ("stop", self.stop), ("axis", self.axis))}  # fmt: skip
        args = [self.tensor, ints["start"], ints["stop"], ints["axis"]]
        if not self.squeeze:
            return b.op("Slice", args, self.tensor.dtype, out=out)
        return b.squeeze(b.op("Slice", args, self.tensor.dtype), [self.axis], out=out)


def _position(node: gs.Node, index: int, length: int, default: int, inserting: bool) -> int | None:
    t = input_at(node, index)
    if t is None:
        return default
    value = constant_value(t)
    if value is None or value.size != 1:
        return None
    pos = int(value.reshape(-1)[0])
    pos = pos + length if pos < 0 else pos
    upper = length if inserting else length - 1
    return pos if 0 <= pos <= upper else None


def _split(node: gs.Node) -> list[Element] | None:
    x = node.inputs[0]
    shape = getattr(x, "shape", None)
    axis = int(node.attrs.get("axis", 0))
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    axis %= len(shape)
    dim = shape[axis]
    if not isinstance(dim, int) or dim < 0:
        return None
    split_t = input_at(node, 1)
    if split_t is None:
        squeeze = int(node.attrs.get("keepdims", 1)) == 0
        return [Element(x, axis, i, i + 1, squeeze) for i in range(dim)]
    split = constant_value(split_t)
    if split is None:
        return None
    if split.ndim == 0:
        size = int(split)
        if size <= 0:
            return None
        sizes = [min(size, dim - s) for s in range(0, dim, size)]
    else:
        sizes = [int(s) for s in split.reshape(-1)]
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            return None
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [Element(x, axis, int(starts[i]), int(starts[i + 1])) for i in range(len(sizes))]


def resolve(seq: gs.Tensor, chain: list[gs.Node] | None = None) -> list[Element] | None:
    """The elements of sequence ``seq`` (None when not static); the producing nodes are appended
    to ``chain``, consumer first."""
    chain = [] if chain is None else chain
    node = producer(seq)
    if node is None or node.op not in PRODUCERS:
        return None
    chain.append(node)
    if node.op == "SequenceConstruct":
        return [Element(t) for t in node.inputs]
    if node.op == "SequenceEmpty":
        return []
    if node.op == "SplitToSequence":
        return _split(node)
    inner = resolve(node.inputs[0], chain)
    if inner is None:
        return None
    if node.op == "SequenceInsert":
        pos = _position(node, 2, len(inner), len(inner), inserting=True)
        return None if pos is None else [*inner[:pos], Element(node.inputs[1]), *inner[pos:]]
    pos = _position(node, 1, len(inner), len(inner) - 1, inserting=False)  # SequenceErase
    return None if pos is None else inner[:pos] + inner[pos + 1 :]


def removable(chain: list[gs.Node], graph: gs.Graph) -> list[gs.Node]:
    """The nodes of ``chain`` whose output is not a graph output (they go once unused)."""
    return [n for n in chain if not any(o in graph.outputs for o in n.outputs)]
