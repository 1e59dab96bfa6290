"""Synthetic transformer encoder blocks built with onnx.helper (no files, no downloads).

One pre-LN block, sequence S, width D, H heads of size D / H::

    x ─┬─ LN1 ─ Q/K/V MatMul+bias ─ heads ─ [q*scale] @ kT ─ + mask ─ Softmax ─ @ v ─ merge ─ Wo+bias ─┐
       └──────────────────────────────────── residual Add "add1" ─────────────────────────────────────┘ = r1
    r1 ─┬─ LN2 ─ fc1+bias ─ GELU ─ fc2+bias ─┐
        └──────────── residual Add "add2" ───┘ = y

LN1 is always the decomposed form (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul
gamma, Add beta); LN2 is decomposed too or one ``LayerNormalization`` (opset 17). GELU is the
Erf form ``0.5 * x * (1 + erf(x / sqrt 2))`` or the Tanh form
``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``. The attention scale multiplies
the scores (``scale_at="scores"``, between the first MatMul and the mask) or q before the first
MatMul (``scale_at="q"``, TensorRT's recommended form).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper
from precision_tiny_models import make_model, vi

S, D, H = 6, 8, 2
HD = D // H
FFN = 16
EPS = 1e-5

#: Names of the nodes of each pattern, for the tests' independent expectations.
LN1_NODES = tuple(
    f"ln1/{n}" for n in ("mean", "sub", "pow", "var", "add_eps", "sqrt", "div", "gamma", "beta")
)
ATTENTION_NODES = ("bmm1", "scale", "mask_add", "softmax", "bmm2")


def _decomposed_ln(prefix: str, x: str, out: str, inits: dict, rs: np.random.RandomState) -> list:
    inits[f"{prefix}.gamma"] = (1.0 + 0.2 * rs.randn(D)).astype(np.float32)
    inits[f"{prefix}.beta"] = (0.1 * rs.randn(D)).astype(np.float32)
    inits["two"] = np.array(2.0, np.float32)
    inits["eps"] = np.array(EPS, np.float32)
    p = prefix
    return [
        helper.make_node("ReduceMean", [x], [f"{p}.m"], name=f"{p}/mean", axes=[-1]),
        helper.make_node("Sub", [x, f"{p}.m"], [f"{p}.d"], name=f"{p}/sub"),
        helper.make_node("Pow", [f"{p}.d", "two"], [f"{p}.d2"], name=f"{p}/pow"),
        helper.make_node("ReduceMean", [f"{p}.d2"], [f"{p}.v"], name=f"{p}/var", axes=[-1]),
        helper.make_node("Add", [f"{p}.v", "eps"], [f"{p}.ve"], name=f"{p}/add_eps"),
        helper.make_node("Sqrt", [f"{p}.ve"], [f"{p}.s"], name=f"{p}/sqrt"),
        helper.make_node("Div", [f"{p}.d", f"{p}.s"], [f"{p}.n"], name=f"{p}/div"),
        helper.make_node("Mul", [f"{p}.n", f"{p}.gamma"], [f"{p}.g"], name=f"{p}/gamma"),
        helper.make_node("Add", [f"{p}.g", f"{p}.beta"], [out], name=f"{p}/beta"),
    ]


def _linear(name: str, x: str, out: str, n_in: int, n_out: int, inits: dict, rs) -> list:
    inits[f"{name}.w"] = (rs.randn(n_in, n_out) / math.sqrt(n_in)).astype(np.float32)
    inits[f"{name}.b"] = (0.1 * rs.randn(n_out)).astype(np.float32)
    return [
        helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=f"{name}/matmul"),
        helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [out], name=f"{name}/bias"),
    ]


def _gelu(form: str, x: str, out: str, inits: dict) -> list:
    if form == "erf":
        inits["sqrt2"] = np.array(math.sqrt(2.0), np.float32)
        inits["one"] = np.array(1.0, np.float32)
        inits["half"] = np.array(0.5, np.float32)
        return [
            helper.make_node("Div", [x, "sqrt2"], ["g.div"], name="gelu/div"),
            helper.make_node("Erf", ["g.div"], ["g.erf"], name="gelu/erf"),
            helper.make_node("Add", ["g.erf", "one"], ["g.add"], name="gelu/add"),
            helper.make_node("Mul", [x, "g.add"], ["g.mul"], name="gelu/mul"),
            helper.make_node("Mul", ["g.mul", "half"], [out], name="gelu/half"),
        ]
    inits["three"] = np.array(3.0, np.float32)
    inits["c044"] = np.array(0.044715, np.float32)
    inits["s2pi"] = np.array(math.sqrt(2.0 / math.pi), np.float32)
    inits["one"] = np.array(1.0, np.float32)
    inits["half"] = np.array(0.5, np.float32)
    return [
        helper.make_node("Pow", [x, "three"], ["g.cube"], name="gelu/cube"),
        helper.make_node("Mul", ["g.cube", "c044"], ["g.c"], name="gelu/c"),
        helper.make_node("Add", [x, "g.c"], ["g.inner"], name="gelu/inner"),
        helper.make_node("Mul", ["g.inner", "s2pi"], ["g.arg"], name="gelu/arg"),
        helper.make_node("Tanh", ["g.arg"], ["g.tanh"], name="gelu/tanh"),
        helper.make_node("Add", ["g.tanh", "one"], ["g.add"], name="gelu/add"),
        helper.make_node("Mul", [x, "g.add"], ["g.mul"], name="gelu/mul"),
        helper.make_node("Mul", ["g.mul", "half"], [out], name="gelu/half"),
    ]


def encoder_block(
    ln2: str = "decomposed", gelu: str = "erf", scale_at: str = "scores", seed: int = 0
) -> onnx.ModelProto:
    """One block (module docstring); inputs ``x [1, S, D]`` and ``mask [1, 1, 1, S]`` (additive)."""
    rs = np.random.RandomState(seed)
    inits: dict[str, np.ndarray] = {
        "heads_shape": np.array([1, S, H, HD], np.int64),
        "merge_shape": np.array([1, S, D], np.int64),
        "attn_scale": np.array(1.0 / math.sqrt(HD), np.float32),
    }
    nodes = _decomposed_ln("ln1", "x", "ln1.out", inits, rs)
    for p in ("q", "k", "v"):
        nodes += _linear(p, "ln1.out", f"{p}.out", D, D, inits, rs)
        nodes.append(helper.make_node("Reshape", [f"{p}.out", "heads_shape"], [f"{p}.h"], name=f"{p}/split"))
    nodes += [
        helper.make_node("Transpose", ["q.h"], ["q.t"], name="q/t", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k.h"], ["k.t"], name="k/t", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v.h"], ["v.t"], name="v/t", perm=[0, 2, 1, 3]),
    ]
    if scale_at == "q":
        nodes += [
            helper.make_node("Mul", ["q.t", "attn_scale"], ["q.s"], name="scale"),
            helper.make_node("MatMul", ["q.s", "k.t"], ["scores"], name="bmm1"),
            helper.make_node("Add", ["scores", "mask"], ["masked"], name="mask_add"),
        ]
    else:
        nodes += [
            helper.make_node("MatMul", ["q.t", "k.t"], ["scores"], name="bmm1"),
            helper.make_node("Mul", ["scores", "attn_scale"], ["scaled"], name="scale"),
            helper.make_node("Add", ["scaled", "mask"], ["masked"], name="mask_add"),
        ]
    nodes += [
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v.t"], ["ctx"], name="bmm2"),
        helper.make_node("Transpose", ["ctx"], ["ctx.t"], name="ctx/t", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx.t", "merge_shape"], ["ctx.m"], name="ctx/merge"),
    ]
    nodes += _linear("o", "ctx.m", "o.out", D, D, inits, rs)
    nodes.append(helper.make_node("Add", ["o.out", "x"], ["r1"], name="add1"))
    opset = 13
    if ln2 == "op":
        opset = 17
        inits["ln2.gamma"] = (1.0 + 0.2 * rs.randn(D)).astype(np.float32)
        inits["ln2.beta"] = (0.1 * rs.randn(D)).astype(np.float32)
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                ["r1", "ln2.gamma", "ln2.beta"],
                ["ln2.out"],
                name="ln2",
                axis=-1,
                epsilon=EPS,
            )
        )
    else:
        nodes += _decomposed_ln("ln2", "r1", "ln2.out", inits, rs)
    nodes += _linear("fc1", "ln2.out", "fc1.out", D, FFN, inits, rs)
    nodes += _gelu(gelu, "fc1.out", "gelu.out", inits)
    nodes += _linear("fc2", "gelu.out", "fc2.out", FFN, D, inits, rs)
    nodes.append(helper.make_node("Add", ["r1", "fc2.out"], ["y"], name="add2"))
    return make_model(
        nodes, [vi("x", [1, S, D]), vi("mask", [1, 1, 1, S])], [vi("y", [1, S, D])], inits, opset=opset
    )


def block_inputs(rs: np.random.RandomState, scale: float = 1.0) -> dict[str, np.ndarray]:
    """``x`` (times ``scale``) and an additive mask hiding the last position."""
    mask = np.zeros((1, 1, 1, S), np.float32)
    mask[..., -1] = -10000.0
    return {"x": (rs.randn(1, S, D) * scale).astype(np.float32), "mask": mask}


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))
