"""Transformer subgraphs that TensorRT builds as one layer: LayerNorm and attention (ONNX facts only).

Shared by the emulation's layer grouping (:mod:`trtq.precision.emulation_fusion`) and the
quantized-consumer list of ``--method auto`` (:func:`trtq.calib.auto.find_consumers`), which may
not import each other. Node positions are indices into ``graph.node``.

Patterns (what the TensorRT ONNX parser + builder see; sources in emulation_fusion's docstring):

- **LayerNorm, decomposed** (PyTorch exports below opset 17)::

      m = ReduceMean(x); d = Sub(x, m); v = ReduceMean(Pow(d, 2) | Mul(d, d))
      y = d / Sqrt(v + eps)   (or d * Reciprocal(Sqrt(v + eps)))   [* gamma] [+ beta]

  ``gamma``/``beta``/``eps`` constants. Every intermediate tensor must be read only inside the
  pattern (otherwise it is not one kernel and nothing is grouped).
- **LayerNorm, one op**: ``LayerNormalization`` (opset 17).
- **Attention**: ``S = MatMul(Q, K')`` (both activations) -> up to three point-wise ops (the scale
  ``Mul``/``Div``, an additive mask ``Add``/``Sub``, a boolean mask ``Where``) -> ``Softmax`` ->
  ``MatMul(P, V)`` with ``P`` the softmax output and ``V`` an activation. ``S``, the point-wise
  results and ``P`` must be read only inside the pattern. A scale applied to Q and/or K *before*
  the first MatMul (as TensorRT recommends) stays outside: it is an ordinary point-wise layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from trtq._core.onnx_model import tensor_readers

#: Point-wise ops allowed between the first MatMul and the Softmax of an attention block.
ATTENTION_EPILOGUE = frozenset({"Mul", "Div", "Add", "Sub", "Where"})


@dataclass(frozen=True)
class Pattern:
    """One matched subgraph.

    ``kind``: ``"layernorm"`` (``decomposed`` says which form) or ``"attention"``; ``nodes``:
    all its node indices, sorted; ``output``: the tensor it produces. Attention only: ``bmm1``,
    ``softmax``, ``bmm2`` (node indices) and ``probs`` (the softmax output, read by ``bmm2``).
    """

    kind: str
    nodes: tuple[int, ...]
    output: str
    decomposed: bool = False
    bmm1: int | None = None
    softmax: int | None = None
    bmm2: int | None = None
    probs: str | None = None


class _Graph:
    def __init__(self, graph: onnx.GraphProto, constants: Iterable[str] | None = None) -> None:
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        for k, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = k
        self.readers = tensor_readers(graph)
        consts = set(constants) if constants is not None else set()
        consts |= {i.name for i in graph.initializer}
        consts |= {n.output[0] for n in self.nodes if n.op_type == "Constant" and n.output}
        self.constants = consts
        self.outputs = {o.name for o in graph.output}

    def only_reader(self, t: str, op_types: Iterable[str]) -> int | None:
        r = self.readers.get(t, [])
        if len(r) == 1 and self.nodes[r[0]].op_type in op_types:
            return r[0]
        return None

    def closed(self, group: set[int], out: str) -> bool:
        """Every tensor made inside ``group`` (but ``out``) is read only inside it (and is no graph output)."""
        for k in group:
            for o in self.nodes[k].output:
                if not o or o == out:
                    continue
                if o in self.outputs or any(r not in group for r in self.readers.get(o, [])):
                    return False
        return True

    def const_input(self, k: int, other_than: str) -> bool:
        ins = [i for i in self.nodes[k].input if i and i != other_than]
        return len(ins) == 1 and ins[0] in self.constants


def find_layernorms(graph: onnx.GraphProto, constants: Iterable[str] | None = None) -> list[Pattern]:
    """Every LayerNorm (decomposed or ``LayerNormalization``) of ``graph``, in graph order.

    ``constants``: tensor names to treat as constants beyond initializers and Constant outputs.
    """
    g = _Graph(graph, constants)
    out: list[Pattern] = []
    for k, node in enumerate(g.nodes):
        if node.op_type == "LayerNormalization":
            out.append(Pattern("layernorm", (k,), node.output[0]))
        elif node.op_type == "ReduceMean":
            p = _decomposed_layernorm(g, k)
            if p is not None:
                out.append(p)
    return out


def _decomposed_layernorm(g: _Graph, r1: int) -> Pattern | None:
    x, mean = g.nodes[r1].input[0], g.nodes[r1].output[0]
    subs = [k for k in g.readers.get(mean, []) if g.nodes[k].op_type == "Sub" and g.nodes[k].input[0] == x]
    if len(subs) != 1 or len(g.readers.get(mean, [])) != 1:
        return None
    sub = subs[0]
    d = g.nodes[sub].output[0]
    sq = [
        k
        for k in g.readers.get(d, [])
        if (g.nodes[k].op_type == "Pow" and g.nodes[k].input[0] == d and g.nodes[k].input[1] in g.constants)
        or (g.nodes[k].op_type == "Mul" and list(g.nodes[k].input) == [d, d])
    ]
    if len(sq) != 1:
        return None
    chain = [r1, sub, sq[0]]
    r2 = g.only_reader(g.nodes[sq[0]].output[0], ("ReduceMean",))
    if r2 is None:
        return None
    add = g.only_reader(g.nodes[r2].output[0], ("Add",))
    if add is None or not g.const_input(add, g.nodes[r2].output[0]):
        return None
    sqrt = g.only_reader(g.nodes[add].output[0], ("Sqrt",))
    if sqrt is None:
        return None
    chain += [r2, add, sqrt]
    s = g.nodes[sqrt].output[0]
    div = g.only_reader(s, ("Div", "Reciprocal"))
    if div is None:
        return None
    if g.nodes[div].op_type == "Reciprocal":
        mul = g.only_reader(g.nodes[div].output[0], ("Mul",))
        if mul is None or d not in g.nodes[mul].input:
            return None
        chain += [div, mul]
        last = mul
    else:
        if list(g.nodes[div].input) != [d, s]:
            return None
        chain.append(div)
        last = div
    for op in ("Mul", "Add"):  # the affine part: gamma, then beta (both optional)
        y = g.nodes[last].output[0]
        nxt = g.only_reader(y, (op,))
        if nxt is None or not g.const_input(nxt, y):
            continue
        chain.append(nxt)
        last = nxt
    out = g.nodes[last].output[0]
    group = set(chain)
    if not g.closed(group, out):
        return None
    return Pattern("layernorm", tuple(sorted(group)), out, decomposed=True)


def find_attention(graph: onnx.GraphProto, constants: Iterable[str] | None = None) -> list[Pattern]:
    """Every attention block ``MatMul -> [scale, mask] -> Softmax -> MatMul`` of ``graph``, in graph order."""
    g = _Graph(graph, constants)
    out: list[Pattern] = []
    for k, node in enumerate(g.nodes):
        if node.op_type == "Softmax":
            p = _attention(g, k)
            if p is not None:
                out.append(p)
    return out


def _is_activation_matmul(g: _Graph, k: int) -> bool:
    n = g.nodes[k]
    return n.op_type == "MatMul" and all(i not in g.constants for i in n.input)


def _attention(g: _Graph, sm: int) -> Pattern | None:
    chain = [sm]
    t = g.nodes[sm].input[0]
    for _ in range(len(ATTENTION_EPILOGUE) + 1):
        p = g.producer.get(t)
        if p is None:
            return None
        node = g.nodes[p]
        if _is_activation_matmul(g, p):
            break
        if node.op_type not in ATTENTION_EPILOGUE or len(chain) > 3:
            return None
        chain.append(p)
        # Where(cond, S, fill): the scores are the second input; the others the first.
        t = node.input[1] if node.op_type == "Where" else node.input[0]
    else:
        return None
    bmm1 = p
    probs = g.nodes[sm].output[0]
    bmm2 = g.only_reader(probs, ("MatMul",))
    if bmm2 is None or g.nodes[bmm2].input[0] != probs or not _is_activation_matmul(g, bmm2):
        return None
    group = {bmm1, bmm2, *chain}
    out = g.nodes[bmm2].output[0]
    if not g.closed(group, out):
        return None
    return Pattern("attention", tuple(sorted(group)), out, bmm1=bmm1, softmax=sm, bmm2=bmm2, probs=probs)
