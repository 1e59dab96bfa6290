"""Decomposed LayerNorm -> ``LayerNormalization`` (opset >= 17).

Pattern (what PyTorch/Paddle exports for ``LayerNorm`` before opset 17)::

    m = ReduceMean(x, axes)        d = Sub(x, m)          p = Pow(d, 2) | Mul(d, d)
    v = ReduceMean(p, axes)        s = Sqrt(Add(v, eps))  n = Div(d, s)
    y = Add(Mul(n, gamma), beta)   (the affine Mul/Add optional)

``axes`` must be the trailing axes of x (rank known). TensorRT imports ``LayerNormalization`` as
one normalization layer that accumulates in FP32, while the decomposed form squares activations
in FP16 when FP16 is on, the classic overflow of transformer/SVTR models in FP16.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const, constant_value, is_square
from trtq.surgery.rule import Match, Rule, register_rule


def _only_user(t: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    return t.outputs[0] if len(t.outputs) == 1 and t not in graph.outputs else None


def _reduce_axes(node: gs.Node) -> list[int] | None:
    if node.op != "ReduceMean" or not int(node.attrs.get("keepdims", 1)):
        return None
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1:
        v = constant_value(node.inputs[1])
        return None if v is None else [int(a) for a in v.reshape(-1)]
    return None


def _other(node: gs.Node, t: gs.Tensor) -> gs.Tensor | None:
    ins = list(node.inputs)
    if len(ins) != 2:
        return None
    return ins[1] if ins[0] is t else (ins[0] if ins[1] is t else None)


def find_layernorm(mean: gs.Node, graph: gs.Graph) -> dict | None:
    """Return the pattern's nodes and parameters starting at its first ReduceMean, or None."""
    axes = _reduce_axes(mean)
    x = mean.inputs[0] if mean.inputs else None
    if axes is None or x is None or x.shape is None:
        return None
    rank = len(x.shape)
    norm = sorted(a % rank for a in axes)
    if norm != list(range(rank - len(norm), rank)):
        return None
    sub = _only_user(mean.outputs[0], graph)
    if sub is None or sub.op != "Sub" or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
        return None
    d = sub.outputs[0]
    distinct = list({id(n): n for n in d.outputs}.values())
    if len(distinct) != 2 or d in graph.outputs:
        return None
    users = {n.op: n for n in distinct}
    sq = users.get("Pow") or users.get("Mul")
    div = users.get("Div")
    if sq is None or div is None or div.inputs[0] is not d:
        return None
    if sq.op == "Pow":
        if sq.inputs[0] is not d or not is_square(sq):
            return None
    elif not (sq.inputs[0] is d and sq.inputs[1] is d):
        return None
    var = _only_user(sq.outputs[0], graph)
    var_axes = None if var is None else _reduce_axes(var)
    if var_axes is None or sorted(a % rank for a in var_axes) != norm:
        return None
    add_eps = _only_user(var.outputs[0], graph)
    if add_eps is None or add_eps.op != "Add":
        return None
    eps = constant_value(_other(add_eps, var.outputs[0]))
    if eps is None or eps.size != 1:
        return None
    sqrt = _only_user(add_eps.outputs[0], graph)
    if sqrt is None or sqrt.op != "Sqrt" or _only_user(sqrt.outputs[0], graph) is not div:
        return None
    nodes = [mean, sub, sq, var, add_eps, sqrt, div]
    out = div.outputs[0]
    norm_shape = x.shape[rank - len(norm) :]
    if not all(isinstance(s, int) for s in norm_shape):
        return None
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.dtype(np.float32)
    gamma = np.ones(norm_shape, dtype)
    beta = np.zeros(norm_shape, dtype)
    mul = _only_user(out, graph)
    if mul is not None and mul.op == "Mul":
        g = _affine(mul, out, norm_shape, rank, dtype)
        if g is not None:
            gamma = g
            nodes.append(mul)
            out = mul.outputs[0]
            add = _only_user(out, graph)
            if add is not None and add.op == "Add":
                b = _affine(add, out, norm_shape, rank, dtype)
                if b is not None:
                    beta = b
                    nodes.append(add)
                    out = add.outputs[0]
    return {"nodes": nodes, "x": x, "out": out, "axis": rank - len(norm), "eps": float(eps.reshape(-1)[0]),
            "gamma": np.ascontiguousarray(gamma), "beta": np.ascontiguousarray(beta)}  # fmt: skip


def _affine(node: gs.Node, t: gs.Tensor, norm_shape, rank: int, dtype) -> np.ndarray | None:
    """The constant other input of ``node`` (the affine Mul/Add after ``t``) broadcast to
    ``norm_shape``, or ``None`` when it is not constant or not per normalized element."""
    v = constant_value(_other(node, t))
    if v is None or not _fits(v, norm_shape, rank):
        return None
    return np.broadcast_to(v.reshape(v.shape[-len(norm_shape) :] if v.ndim else ()), norm_shape).astype(dtype)


def _fits(v: np.ndarray, norm_shape, rank: int) -> bool:
    """True when ``v`` broadcasts over only the normalized (trailing) axes."""
    if v.ndim > rank:
        return False
    lead = v.shape[: max(0, v.ndim - len(norm_shape))]
    if any(s != 1 for s in lead):
        return False
    tail = v.shape[max(0, v.ndim - len(norm_shape)) :]
    try:
        return np.broadcast_shapes(tail, tuple(norm_shape)) == tuple(norm_shape)
    except ValueError:
        return False


@register_rule
class LayerNormFusion(Rule):
    name = "layernorm_fusion"
    summary = "decomposed LayerNorm (ReduceMean..Sqrt/Div..Mul/Add) -> LayerNormalization (opset >= 17)"
    reports = True
    order = 90
    rewrites = ("ReduceMean",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 17:
            return []
        out = []
        for node in graph.nodes:
            if node.op == "ReduceMean":
                found = find_layernorm(node, graph)
                if found is not None:
                    out.append(self._match(found["nodes"], "decomposed LayerNorm: its Pow/ReduceMean overflow in FP16; "
                                           "LayerNormalization is one layer"))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found_nodes: list[gs.Node], match: Match) -> bool:
        found = find_layernorm(found_nodes[0], graph)
        if found is None or [n.name for n in found["nodes"]] != list(match.nodes):
            return False
        last = found["nodes"][-1]
        out = found["out"]
        last.outputs.clear()
        names = NameMaker(graph)
        add_node(
            graph,
            names,
            "LayerNormalization",
            [
                found["x"],
                const(names, f"{out.name}_gamma", found["gamma"]),
                const(names, f"{out.name}_beta", found["beta"]),
            ],
            [out],
            {"axis": found["axis"], "epsilon": found["eps"]},
            base=f"{found_nodes[0].name}_layernorm",
        )
        return True
