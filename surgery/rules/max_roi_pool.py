"""``MaxRoiPool`` -> bin masks from the RoI coordinates + masked ``ReduceMax``, exact.

ONNX Runtime (Caffe's RoI pooling): per RoI ``(batch, x1, y1, x2, y2)`` the corners are
``round(coordinate * spatial_scale)`` (C ``round``: half away from zero), the RoI is
``max(end - start + 1, 1)`` pixels per side, bin ``p`` of ``P`` covers rows
``[floor(p * size / P), ceil((p + 1) * size / P))`` (FP32 products) shifted by the start and
clipped to the image; the output is the maximum over the bin, starting from ``-FLT_MAX``, and 0 for
an empty bin. The rewrite computes exactly those integer bounds with FP32 ONNX ops (``Round`` is
half to even, so ties are found with ``|v| - floor(|v|) == 0.5`` and rounded away from zero),
builds row and column masks (``Less``/``Not`` against constant index grids), takes the maximum over
columns, then rows (a maximum over a rectangle is separable) with ``Where(mask, x, -FLT_MAX)`` +
``ReduceMax``, clamps at ``-FLT_MAX`` and writes 0 where a bin is empty. RoI coordinates may be
computed at run time. Exact except for NaN inputs (ORT's comparisons skip a NaN, ``ReduceMax`` may
return it).

Conditions: static shapes of X (``N, C, H, W``) and of the RoIs (``R``); the intermediate tensors
(``R*C*H*W*pooled_w`` and ``R*C*H*pooled_h*pooled_w`` elements) at most 2**26; opset >= 11.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import const0

MAX_ELEMENTS = 2**26
_LOWEST = np.float32(np.finfo(np.float32).min)


def _static(t: gs.Tensor) -> list[int] | None:
    shape = getattr(t, "shape", None)
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return [int(d) for d in shape]


def _plan(node: gs.Node) -> dict | None:
    x, rois = _static(node.inputs[0]), _static(node.inputs[1]) if len(node.inputs) > 1 else None
    pooled = list(node.attrs.get("pooled_shape", []))
    if x is None or rois is None or len(x) != 4 or len(rois) != 2 or rois[1] != 5 or len(pooled) != 2:
        return None
    (_, c, hgt, wid), r, (ph, pw) = x, rois[0], pooled
    if max(r * c * hgt * wid * pw, r * c * hgt * ph * pw) > MAX_ELEMENTS:
        return None
    return {"C": c, "H": hgt, "W": wid, "R": r, "ph": int(ph), "pw": int(pw),
            "scale": np.float32(node.attrs.get("spatial_scale", 1.0))}  # fmt: skip


@register_rule
class MaxRoiPoolToMasks(Rule):
    name = "max_roi_pool"
    summary = "MaxRoiPool -> integer bin bounds, row/column masks and masked ReduceMax (static shapes)"
    order = 59
    rewrites = ("MaxRoiPool",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        return [
            self._match([n], "MaxRoiPool is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "MaxRoiPool" and (n.domain or "") in ("", "ai.onnx") and _plan(n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        base = node.name
        opset = graph.opset

        def op(kind, inputs, attrs=None, tag="", dtype=np.float32):
            out = gs.Variable(names(f"{base}_{tag or kind.lower()}"), dtype=dtype)
            add_node(graph, names, kind, inputs, [out], attrs, base=f"{base}_{tag or kind.lower()}")
            return out

        def c(value, tag):
            return const0(names, f"{base}_{tag}", value)

        def i64(values, tag):
            return c(np.array(values, np.int64), tag)

        def column(t, j, tag):  # rois[:, j:j+1]
            return op(
                "Slice", [t, i64([j], f"{tag}_s"), i64([j + 1], f"{tag}_e"), i64([1], "axis1")], tag=tag
            )

        def reduce_max(t, axis, tag):
            if opset >= 18:
                return op("ReduceMax", [t, i64([axis], f"{tag}_axes")], {"keepdims": 0}, tag)
            return op("ReduceMax", [t], {"axes": [axis], "keepdims": 0}, tag)

        x, rois = node.inputs[0], node.inputs[1]
        # corners: round half away from zero of coordinate * spatial_scale
        v = op("Mul", [op("Slice", [rois, i64([1], "c_s"), i64([5], "c_e"), i64([1], "axis1")], tag="coords"),
                       c(plan["scale"], "spatial_scale")], tag="scaled")  # fmt: skip
        mag = op("Abs", [v], tag="mag")
        low = op("Floor", [mag], tag="mag_floor")
        tie = op(
            "Equal",
            [op("Sub", [mag, low], tag="frac"), c(np.float32(0.5), "half")],
            tag="tie",
            dtype=np.bool_,
        )
        away = op("Where", [tie, op("Add", [low, c(np.float32(1), "one")], tag="up"), op("Round", [mag], tag="near")],
                  tag="away")  # fmt: skip
        corners = op("Mul", [op("Sign", [v], tag="sign"), away], tag="corners")  # [R, 4]: x1, y1, x2, y2

        def bounds(start_j, end_j, pooled, size, tag):
            start, end = column(corners, start_j, f"{tag}0"), column(corners, end_j, f"{tag}1")
            extent = op("Max", [op("Add", [op("Sub", [end, start], tag=f"{tag}_span"), c(np.float32(1), "one_")],
                                   tag=f"{tag}_len"), c(np.float32(1), "min_len")], tag=f"{tag}_extent")  # fmt: skip
            bin_size = op("Div", [extent, c(np.float32(pooled), f"{tag}_bins")], tag=f"{tag}_bin")  # [R, 1]
            idx = np.arange(pooled, dtype=np.float32)[None]
            lo = op(
                "Floor", [op("Mul", [c(idx, f"{tag}_p"), bin_size], tag=f"{tag}_lo_f")], tag=f"{tag}_lo_i"
            )
            hi = op(
                "Ceil", [op("Mul", [c(idx + 1, f"{tag}_p1"), bin_size], tag=f"{tag}_hi_f")], tag=f"{tag}_hi_i"
            )

            def place(t, which):  # + start, clipped to [0, size]
                return op("Min", [op("Max", [op("Add", [t, start], tag=f"{tag}_{which}_abs"), c(np.float32(0), "zero")],
                                     tag=f"{tag}_{which}_pos"), c(np.float32(size), f"{tag}_size")], tag=f"{tag}_{which}")  # fmt: skip

            lo, hi = place(lo, "start"), place(hi, "end")  # [R, pooled]
            grid = c(np.arange(size, dtype=np.float32).reshape(1, 1, size), f"{tag}_grid")
            lo3 = (
                op("Unsqueeze", [lo, i64([2], "ax2")], tag=f"{tag}_lo3")
                if opset >= 13
                else op("Unsqueeze", [lo], {"axes": [2]}, f"{tag}_lo3")
            )
            hi3 = (
                op("Unsqueeze", [hi, i64([2], "ax2")], tag=f"{tag}_hi3")
                if opset >= 13
                else op("Unsqueeze", [hi], {"axes": [2]}, f"{tag}_hi3")
            )
            before = op("Less", [grid, lo3], tag=f"{tag}_before", dtype=np.bool_)
            inside = op("And", [op("Not", [before], tag=f"{tag}_not_before", dtype=np.bool_),
                                op("Less", [grid, hi3], tag=f"{tag}_below_end", dtype=np.bool_)],
                        tag=f"{tag}_mask", dtype=np.bool_)  # [R, pooled, size]  # fmt: skip
            empty = op("Not", [op("Less", [lo, hi], tag=f"{tag}_nonempty", dtype=np.bool_)], tag=f"{tag}_empty",
                       dtype=np.bool_)  # [R, pooled]  # fmt: skip
            return inside, empty

        rows, rows_empty = bounds(1, 3, plan["ph"], plan["H"], "h")
        cols, cols_empty = bounds(0, 2, plan["pw"], plan["W"], "w")
        batch = op("Cast", [op("Reshape", [column(rois, 0, "batch_f"), i64([-1], "flat")], tag="batch_r")],
                   {"to": 7}, "batch", dtype=np.int64)  # fmt: skip
        xr = op("Gather", [x, batch], {"axis": 0}, "per_roi")  # [R, C, H, W]
        r_, ph, pw, hh, ww = plan["R"], plan["ph"], plan["pw"], plan["H"], plan["W"]
        lowest = c(_LOWEST, "lowest")
        x5 = op("Reshape", [xr, i64([r_, plan["C"], hh, 1, ww], "x5_shape")], tag="x5")
        m5 = op("Reshape", [cols, i64([r_, 1, 1, pw, ww], "m5_shape")], tag="cols5", dtype=np.bool_)
        by_col = reduce_max(op("Where", [m5, x5, lowest], tag="col_masked"), 4, "col_max")  # [R, C, H, pw]
        t5 = op("Reshape", [by_col, i64([r_, plan["C"], 1, hh, pw], "t5_shape")], tag="t5")
        m5h = op("Reshape", [rows, i64([r_, 1, ph, hh, 1], "m5h_shape")], tag="rows5", dtype=np.bool_)
        pooled = reduce_max(op("Where", [m5h, t5, lowest], tag="row_masked"), 3, "row_max")  # [R, C, ph, pw]
        pooled = op("Max", [pooled, lowest], tag="from_lowest")
        empty = op("Or", [op("Reshape", [rows_empty, i64([r_, 1, ph, 1], "re_shape")], tag="re4", dtype=np.bool_),
                          op("Reshape", [cols_empty, i64([r_, 1, 1, pw], "ce_shape")], tag="ce4", dtype=np.bool_)],
                   tag="empty_bin", dtype=np.bool_)  # fmt: skip
        out = node.outputs[0]
        node.outputs.clear()
        add_node(
            graph, names, "Where", [empty, c(np.float32(0), "zero_out"), pooled], [out], base=f"{base}_out"
        )
        return True
