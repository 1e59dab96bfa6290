"""``SequenceMap`` over statically known sequences -> its body, once per element, and a
``SequenceConstruct`` of the results (which the other sequence rules then resolve).

Fires when the input sequence and every sequence among the additional inputs resolve (see
:mod:`trtq.surgery.rules._sequences`) to the same length ``n`` and the body has no nested graphs.
Iteration ``i`` is a copy of the body whose inputs are element ``i`` of each sequence input and the
additional tensor inputs themselves, as ``SequenceMap`` binds them; output ``k`` becomes
``SequenceConstruct`` of the ``n`` copies' output ``k`` (``SequenceEmpty`` of the element type when
``n == 0``). The same nodes compute the same values, so the rewrite is exact.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._sequences import Element, removable, resolve
from trtq.surgery.rules._tensor_ops import Builder, detach, onnx_type


def _is_sequence(t: gs.Tensor) -> bool:
    return getattr(t, "type", "tensor_type") == "sequence_type"


def _bindings(node: gs.Node, chain: list[gs.Node]) -> list[list[Element] | gs.Tensor] | None:
    """Per input: the elements of a sequence, or the tensor itself; None when not static."""
    out: list[list[Element] | gs.Tensor] = []
    for index, t in enumerate(node.inputs):
        if index == 0 or _is_sequence(t):
            elements = resolve(t, chain)
            if elements is None:
                return None
            out.append(elements)
        else:
            out.append(t)
    lengths = {len(b) for b in out if isinstance(b, list)}
    return out if len(lengths) == 1 else None


def _has_subgraphs(body: gs.Graph) -> bool:
    return any(isinstance(v, gs.Graph) for n in body.nodes for v in n.attrs.values())


@register_rule
class SequenceMapUnroll(Rule):
    name = "sequence_map_unroll"
    summary = "SequenceMap over static sequences -> the body once per element + SequenceConstruct"
    order = 40
    rewrites: ClassVar[tuple[str, ...]] = ("SequenceMap",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "SequenceMap" or not isinstance(node.attrs.get("body"), gs.Graph):
                continue
            chain: list[gs.Node] = []
            if _has_subgraphs(node.attrs["body"]) or _bindings(node, chain) is None:
                continue
            out.append(self._match([node, *removable(chain, graph)],
                                   "sequence ops are not supported by TensorRT's ONNX parser"))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        node = found[0]
        body: gs.Graph = node.attrs["body"]
        bindings = _bindings(node, [])
        assert bindings is not None
        n = next(len(b) for b in bindings if isinstance(b, list))
        outs = detach(graph, node)
        b = Builder(graph, node.name)
        local = {t.name for t in body.inputs} | {o.name for nd in body.nodes for o in nd.outputs}
        results: list[list[gs.Tensor]] = [[] for _ in outs]
        for i in range(n):
            outer = OrderedDict((k, v) for k, v in graph.tensors().items() if k not in local)
            copy = body.copy(tensor_map=outer)
            actual = {id(var): (bnd[i].build(b) if isinstance(bnd, list) else bnd)
                      for var, bnd in zip(copy.inputs, bindings, strict=True)}  # fmt: skip
            outer_ids = {id(t) for t in outer.values()}
            for t in copy.tensors().values():
                if id(t) not in outer_ids and id(t) not in actual:
                    t.name = b.names(f"{node.name}_{i}_{t.name}")
            for nd in copy.nodes:
                nd.name = b.names(f"{node.name}_{i}_{nd.name or nd.op}")
                for j, t in enumerate(nd.inputs):
                    if id(t) in actual:
                        nd.inputs[j] = actual[id(t)]
            graph.nodes.extend(copy.nodes)
            for k, t in enumerate(copy.outputs):
                results[k].append(actual.get(id(t), t))
        for k, (seq, parts) in enumerate(zip(outs, results, strict=True)):
            if parts:
                b.op("SequenceConstruct", parts, out=seq)
            else:
                b.op("SequenceEmpty", [], out=seq, attrs={"dtype": onnx_type(body.outputs[k].dtype)})
        return True
