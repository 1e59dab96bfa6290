"""Q/DQ that TensorRT rejects (non-zero zero point, 8-bit tensors it cannot hold) -> the same
arithmetic in FP32, bit-exact.

TensorRT's Q/DQ take zero point 0 only, ``DequantizeLinear`` reads INT8/FP8/FP4/INT4 only, and a
UINT8 tensor may only be a network input or output. ONNX Runtime's QOperator models (and the
``qlinear_*`` rewrites of them) quantize activations to UINT8 or INT8 with non-zero zero points.
This rule lifts those restrictions, in three steps, each exact:

1. *sink*: a per-tensor ``QuantizeLinear`` feeding a data-movement op that ORT runs on 8-bit
   tensors (MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Slice, Gather,
   DepthToSpace, SpaceToDepth, Tile, Expand) moves below it: quantization is elementwise and
   non-decreasing, so it commutes with moving data and with taking maxima; a ``Cast`` to 8 bits
   of proven integers moves likewise below those and below ``Pad`` (its constant value cast to
   FP32), ``Split``, nearest ``Resize`` and ``Concat``;
2. ``QuantizeLinear(x, s, z)`` -> ``Clip(Round(x / s) + z, qmin, qmax)`` in FP32 then ``Cast`` to
   the 8-bit type (ORT divides by the scale and rounds half to even, as ``Div`` + ``Round`` do);
3. ``DequantizeLinear(q, s, z)`` -> ``(q - z) * s`` in FP32, reading the FP32 integer before a
   ``Cast`` to 8 bits when there is one (values proven integral and in range: produced by
   ``Clip`` with integer bounds of ``Round``/integer arithmetic), so the 8-bit tensor disappears;
   ``Cast(8-bit -> FP32)`` of such a ``Cast`` becomes ``Identity`` likewise.

Conditions: scales and zero points constant per-tensor scalars; opset >= 11 (``Round``). What is
left of the 8-bit types is a ``Cast`` at a graph output (allowed) or one feeding a node no rule
rewrites. The FP32 form runs in TensorRT as FP32 (no INT8 kernels): exact, not faster. INT8
Q/DQ with zero point 0 are left alone (TensorRT runs them in INT8).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at, producer
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import const0, data_dtype, qrange, scalar_params

LAYOUT_OPS = frozenset(
    {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather",
     "DepthToSpace", "SpaceToDepth", "Tile", "Expand"}
)  # fmt: skip
# Data movement ORT's QOperator models also run on 8-bit tensors, which a Cast (not a Q) moves through.
MOVE_OPS = LAYOUT_OPS | {"Pad", "Split", "Resize", "Concat"}
_EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))
_TO = {np.dtype(np.uint8): 2, np.dtype(np.int8): 3}
_FLOAT = 1


def _q_params(node: gs.Node):
    """(scale, zero point, 8-bit dtype) of a per-tensor Q/DQ node with constant parameters."""
    default = data_dtype(node.inputs[0]) if node.op == "DequantizeLinear" else np.dtype(np.uint8)
    p = scalar_params(node, 1, 2, default if default in _EIGHT_BIT else np.uint8)
    if p is None or np.dtype(p[1].dtype) not in _EIGHT_BIT or not np.isfinite(p[0]) or p[0] <= 0:
        return None
    return p[0], p[1], np.dtype(p[1].dtype)


def _is_graph_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(t is o for o in graph.outputs)


def _clip_bounds(node: gs.Node) -> tuple[float, float] | None:
    if "min" in node.attrs or "max" in node.attrs:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    lo, hi = constant_value(input_at(node, 1)), constant_value(input_at(node, 2))
    if (input_at(node, 1) is not None and lo is None) or (input_at(node, 2) is not None and hi is None):
        return None
    if (lo is not None and lo.size != 1) or (hi is not None and hi.size != 1):
        return None
    return (-np.inf if lo is None else float(lo.reshape(-1)[0])), (
        np.inf if hi is None else float(hi.reshape(-1)[0])
    )


def _integral(t: gs.Tensor, depth: int = 0) -> bool:
    """``t`` holds integers only (in FP32): from Round, integer Clip/Add/Sub, integer casts."""
    value = constant_value(t)
    if value is not None:
        return bool(np.all(np.mod(value, 1) == 0))
    node = producer(t)
    if node is None or depth > 32:
        return False
    if node.op == "Round" or _table_range(node) is not None:
        return True
    if node.op == "Cast":
        src = data_dtype(node.inputs[0])
        return src is not None and np.issubdtype(src, np.integer)
    if node.op in ("Add", "Sub", "Concat"):
        return all(_integral(i, depth + 1) for i in node.inputs)
    if node.op == "Clip":
        b = _clip_bounds(node)
        return (
            b is not None
            and all(np.isinf(v) or v == int(v) for v in b)
            and _integral(node.inputs[0], depth + 1)
        )
    if node.op in MOVE_OPS and (data := _data_inputs(node)) is not None:
        return _pad_value_ok(node, -np.inf, np.inf) and all(_integral(t, depth + 1) for t in data)
    return False


def _data_inputs(node: gs.Node) -> list[gs.Tensor] | None:
    """The inputs ``node`` moves data of (None when it does more than move data, e.g. linear Resize)."""
    if node.op == "Concat":
        return list(node.inputs)
    if node.op == "Resize":
        mode = node.attrs.get("mode", "nearest")
        return [node.inputs[0]] if (mode.decode() if isinstance(mode, bytes) else mode) == "nearest" else None
    if node.op == "Pad":
        mode = node.attrs.get("mode", "constant")
        value = input_at(node, 2)
        if (mode.decode() if isinstance(mode, bytes) else mode) == "constant" and value is not None:
            if constant_value(value) is None:
                return None
        return [node.inputs[0]]
    return [node.inputs[0]] if node.op in MOVE_OPS and node.inputs else None


def _pad_value_ok(node: gs.Node, lo: float, hi: float) -> bool:
    value = constant_value(input_at(node, 2)) if node.op == "Pad" else None
    return value is None or bool(np.all((np.mod(value, 1) == 0) & (value >= lo) & (value <= hi)))


def _table_range(node: gs.Node) -> tuple[float, float] | None:
    """(min, max) of a Gather from a constant table of integers (a lookup-table rewrite)."""
    table = constant_value(node.inputs[0]) if node.op == "Gather" and node.inputs else None
    if table is None or not table.size or not np.all(np.mod(table, 1) == 0):
        return None
    return float(table.min()), float(table.max())


def _in_range(t: gs.Tensor, lo: int, hi: int, depth: int = 0) -> bool:
    """``t`` is proven integral with every value in ``[lo, hi]``."""
    node = producer(t)
    if node is None or depth > 32:
        return False
    if node.op == "Clip":
        b = _clip_bounds(node)
        return b is not None and lo <= b[0] and b[1] <= hi and _integral(node.inputs[0])
    if (r := _table_range(node)) is not None:
        return lo <= r[0] and r[1] <= hi
    if node.op in MOVE_OPS and (data := _data_inputs(node)) is not None:
        return _pad_value_ok(node, lo, hi) and all(_in_range(t, lo, hi, depth + 1) for t in data)
    return False


def _exact_float_source(t: gs.Tensor) -> gs.Tensor | None:
    """For an 8-bit ``t = Cast(f)`` with ``f`` proven integral and in range: ``f``."""
    node = producer(t)
    dtype = data_dtype(t)
    if node is None or node.op != "Cast" or dtype not in _EIGHT_BIT:
        return None
    src = node.inputs[0]
    if data_dtype(src) != np.dtype(np.float32):
        return None
    lo, hi = qrange(dtype)
    return src if _in_range(src, lo, hi) else None


def _cast_sinkable(node: gs.Node) -> bool:
    """Every data input of ``node`` is ``Cast(f)`` to one 8-bit type with ``f`` proven integral in range."""
    data = _data_inputs(node)
    if not data or any(_exact_float_source(t) is None for t in data):
        return False
    dtypes = {data_dtype(t) for t in data}
    if len(dtypes) != 1:
        return False
    lo, hi = qrange(dtypes.pop())
    return _pad_value_ok(node, lo, hi)


def _q_rejected(graph: gs.Graph, node: gs.Node, params) -> bool:
    _, z, dtype = params
    return bool(z != 0) or (dtype == np.dtype(np.uint8) and not _is_graph_output(graph, node.outputs[0]))


@register_rule
class QDQToFloat(Rule):
    name = "qdq_to_float"
    summary = "Q/DQ with non-zero zero point or 8-bit tensors TensorRT rejects -> the same FP32 arithmetic"
    order = 85
    rewrites = ("QuantizeLinear", "DequantizeLinear", "Cast", *sorted(MOVE_OPS))

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        out = []
        for node in graph.nodes:
            if node.op in MOVE_OPS and (node.domain or "") == "" and _cast_sinkable(node):
                out.append(self._match([node], f"{node.op} on an 8-bit tensor", kind="sink_cast"))
            elif node.op in LAYOUT_OPS and node.inputs and (node.domain or "") == "":
                q = producer(node.inputs[0])
                if q is not None and q.op == "QuantizeLinear" and _q_params(q) is not None:
                    out.append(self._match([node, q], f"{node.op} on an 8-bit tensor", kind="sink"))
            elif node.op == "QuantizeLinear" and (params := _q_params(node)) is not None:
                users = node.outputs[0].outputs
                feeds_layout = any(c.op in LAYOUT_OPS for c in users)
                feeds_move = any(c.op in MOVE_OPS - LAYOUT_OPS for c in users)
                if (_q_rejected(graph, node, params) or feeds_move) and not feeds_layout:
                    # the 8-bit data movers after it are named too: their Casts move on the next pass
                    movers = [c for c in users if c.op in MOVE_OPS]
                    out.append(
                        self._match([node, *movers], "zero point or 8-bit tensor TensorRT rejects", kind="q")
                    )
            elif node.op == "DequantizeLinear" and (params := _q_params(node)) is not None:
                if data_dtype(node.inputs[0]) in _EIGHT_BIT and (
                    params[1] != 0 or params[2] == np.dtype(np.uint8) or _exact_float_source(node.inputs[0])
                ):
                    out.append(self._match([node], "zero point or UINT8 input TensorRT rejects", kind="dq"))
            elif node.op == "Cast" and node.attrs.get("to") == _FLOAT and node.inputs:
                if _exact_float_source(node.inputs[0]) is not None:
                    out.append(self._match([node], "Cast pair through an 8-bit tensor", kind="cast"))
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        names = NameMaker(graph)
        kind = match.data["kind"]
        if kind == "sink":
            return self._sink(graph, names, *found)
        if kind == "sink_cast":
            return self._sink_cast(graph, names, found[0])
        if kind == "q":
            return self._quantize(graph, names, found[0])
        if kind == "dq":
            return self._dequantize(graph, names, found[0])
        src = _exact_float_source(found[0].inputs[0])
        if src is None:
            return False
        node = found[0]
        node.op, node.attrs = "Identity", {}
        node.inputs[0] = src
        return True

    def _sink(self, graph: gs.Graph, names: NameMaker, node: gs.Node, q: gs.Node) -> bool:
        if producer(node.inputs[0]) is not q:
            return False
        out = node.outputs[0]
        moved = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
        node.inputs[0] = q.inputs[0]
        node.outputs[0] = moved
        add_node(graph, names, "QuantizeLinear", [moved, *q.inputs[1:]], [out], base=f"{q.name}_moved")
        return True

    def _sink_cast(self, graph: gs.Graph, names: NameMaker, node: gs.Node) -> bool:
        """Move the Casts to 8 bits below ``node``: it then moves the FP32 integers instead."""
        if not _cast_sinkable(node):
            return False
        data = _data_inputs(node) or []
        dtype = data_dtype(data[0])
        for i, t in enumerate(node.inputs):
            if any(t is d for d in data):
                node.inputs[i] = _exact_float_source(t)
        if node.op == "Pad" and (value := constant_value(input_at(node, 2))) is not None:
            node.inputs[2] = const0(names, f"{node.name}_pad_value", value.astype(np.float32))
        moved = node.outputs if node.op == "Split" else node.outputs[:1]
        for i, out in enumerate(list(moved)):
            if isinstance(out, gs.Variable) and not out.name:
                continue
            f = gs.Variable(names(f"{out.name}_float"), dtype=np.float32)
            node.outputs[i] = f
            add_node(graph, names, "Cast", [f], [out], {"to": _TO[dtype]}, base=f"{node.name}_cast_{i}")
        return True

    def _quantize(self, graph: gs.Graph, names: NameMaker, node: gs.Node) -> bool:
        s, z, dtype = _q_params(node)
        lo, hi = qrange(dtype)
        base = node.name
        v = node.inputs[0]
        if s != np.float32(1.0):
            v = self._op(graph, names, "Div", [v, const0(names, f"{base}_scale", s)], f"{base}_div")
        v = self._op(graph, names, "Round", [v], f"{base}_round")
        if z != 0:
            v = self._op(
                graph, names, "Add", [v, const0(names, f"{base}_zp", np.float32(z))], f"{base}_add_zp"
            )
        v = self._clip(graph, names, v, lo, hi, f"{base}_saturate")
        out = node.outputs[0]
        node.outputs.clear()
        add_node(graph, names, "Cast", [v], [out], {"to": _TO[dtype]}, base=f"{base}_cast")
        return True

    def _dequantize(self, graph: gs.Graph, names: NameMaker, node: gs.Node) -> bool:
        s, z, _ = _q_params(node)
        base = node.name
        q = node.inputs[0]
        out = node.outputs[0]
        value = constant_value(q)
        if value is not None:
            folded = ((value.astype(np.int32) - np.int32(z)).astype(np.float32) * s).astype(np.float32)
            node.outputs.clear()
            add_node(graph, names, "Identity", [const0(names, f"{base}_value", folded)], [out], base=base)
            return True
        f = _exact_float_source(q)
        if f is None:
            f = self._op(graph, names, "Cast", [q], f"{base}_to_float", {"to": _FLOAT})
        steps = []
        if z != 0:
            steps.append(("Sub", const0(names, f"{base}_zp", np.float32(z))))
        if s != np.float32(1.0):
            steps.append(("Mul", const0(names, f"{base}_scale", s)))
        node.outputs.clear()
        if not steps:
            add_node(graph, names, "Identity", [f], [out], base=base)
        for i, (op, c) in enumerate(steps):
            last = i == len(steps) - 1
            target = out if last else gs.Variable(names(f"{base}_{op.lower()}"), dtype=np.float32)
            add_node(graph, names, op, [f, c], [target], base=f"{base}_{op.lower()}")
            f = target
        return True

    @staticmethod
    def _op(graph, names, op, inputs, base, attrs=None) -> gs.Variable:
        out = gs.Variable(names(base), dtype=np.float32)
        add_node(graph, names, op, inputs, [out], attrs, base=base)
        return out

    def _clip(self, graph, names, v, lo, hi, base) -> gs.Variable:
        if graph.opset < 11:
            return self._op(graph, names, "Clip", [v], base, {"min": float(lo), "max": float(hi)})
        return self._op(
            graph,
            names,
            "Clip",
            [v, const0(names, f"{base}_min", np.float32(lo)), const0(names, f"{base}_max", np.float32(hi))],
            base,
        )
