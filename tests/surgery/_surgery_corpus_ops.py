"""Corpus for the operator-lowering rules: one tiny ONNX model per operator TensorRT's parser
rejects and an exact rewrite lowers, with edge-case inputs (extremes, ties, saturation, empty
selections, negative values, zeros) on top of the verifier's random ones.

Same :class:`Case` as ``_surgery_corpus.py``; ``test_rules_corpus_ops.py`` runs the proofs.
"""

from __future__ import annotations

import numpy as np
import onnx
from _surgery_corpus import Case
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    onnx.checker.check_model(model)
    return model


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def _f32(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _ints(dtype, shape, seed):
    """Integers over the type's whole range, its extremes included."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    flat = x.reshape(-1)
    extremes = np.array([info.min, info.max, 0, -1 if info.min < 0 else 1, info.min + 1, info.max - 1], dtype)
    flat[: min(flat.size, extremes.size)] = extremes[: flat.size]
    return x


# --- bitwise -------------------------------------------------------------------------------------

_BIT_ELEMS = {np.int8: T.INT8, np.uint8: T.UINT8, np.int32: T.INT32, np.int64: T.INT64}


def _bitwise_not(dtype):
    def build():
        nodes = [h.make_node("BitwiseNot", ["x"], ["y"], name="bitnot")]
        e = _BIT_ELEMS[dtype]
        return _model(nodes, [_vi("x", e, [4, 6])], [_vi("y", e, [4, 6])])

    return build


def _bitwise(op, dtype):
    def build():
        nodes = [h.make_node(op, ["a", "b"], ["y"], name="bitop")]
        e = _BIT_ELEMS[dtype]
        return _model(nodes, [_vi("a", e, [3, 1, 5]), _vi("b", e, [4, 5])], [_vi("y", e, [3, 4, 5])])

    return build


def _bit_edges(dtype, names, shapes):
    def edges():
        out = [{n: _ints(dtype, s, seed=i) for i, (n, s) in enumerate(zip(names, shapes, strict=True))}]
        info = np.iinfo(dtype)
        for value in (info.min, info.max, 0):
            out.append({n: np.full(s, value, dtype) for n, s in zip(names, shapes, strict=True)})
        return out

    return edges


_BIN = (["a", "b"], [(3, 1, 5), (4, 5)])


CASES: list[Case] = [
    Case("bitwise_not_int32", _bitwise_not(np.int32), "bitnot", "bitwise_not_arith",
         _bit_edges(np.int32, ["x"], [(4, 6)])),
    Case("bitwise_not_int8", _bitwise_not(np.int8), "bitnot", "bitwise_not_arith",
         _bit_edges(np.int8, ["x"], [(4, 6)])),
    Case("bitwise_not_uint8", _bitwise_not(np.uint8), "bitnot", "bitwise_not_arith",
         _bit_edges(np.uint8, ["x"], [(4, 6)])),
    Case("bitwise_not_int64", _bitwise_not(np.int64), "bitnot", "bitwise_not_arith",
         _bit_edges(np.int64, ["x"], [(4, 6)])),
    Case("bitwise_and_int32", _bitwise("BitwiseAnd", np.int32), "bitop", "bitwise_to_bits",
         _bit_edges(np.int32, *_BIN)),
    Case("bitwise_or_int8", _bitwise("BitwiseOr", np.int8), "bitop", "bitwise_to_bits", _bit_edges(np.int8, *_BIN)),
    Case("bitwise_xor_int64", _bitwise("BitwiseXor", np.int64), "bitop", "bitwise_to_bits",
         _bit_edges(np.int64, *_BIN)),
    Case("bitwise_and_uint8", _bitwise("BitwiseAnd", np.uint8), "bitop", "bitwise_to_bits",
         _bit_edges(np.uint8, *_BIN)),
]  # fmt: skip


# --- bitshift ------------------------------------------------------------------------------------


def _bitshift(direction, shift_const):
    def build():
        node = h.make_node("BitShift", ["x", "s"], ["y"], name="shift", direction=direction)
        if shift_const:
            inits = [_init("s", np.array([0, 1, 3, 7, 8, 200], np.uint8))]
            return _model([node], [_vi("x", T.UINT8, [4, 6])], [_vi("y", T.UINT8, [4, 6])], inits)
        return _model(
            [node], [_vi("x", T.UINT8, [4, 6]), _vi("s", T.UINT8, [4, 6])], [_vi("y", T.UINT8, [4, 6])]
        )

    return build


def _shift_edges():
    every = np.arange(256, dtype=np.uint8)
    return [
        {"x": np.full((4, 6), 255, np.uint8), "s": np.arange(24, dtype=np.uint8).reshape(4, 6)},
        {"x": _ints(np.uint8, (4, 6), 3), "s": np.array([0, 7, 8, 9, 255, 128] * 4, np.uint8).reshape(4, 6)},
        {"x": every[:24].reshape(4, 6) + 200, "s": np.full((4, 6), 1, np.uint8)},
    ] + [{"x": every.reshape(-1)[k * 24 : k * 24 + 24].reshape(4, 6), "s": np.full((4, 6), k % 9, np.uint8)}
         for k in range(10)]  # fmt: skip


def _shift_const_edges():
    return [
        {"x": np.full((4, 6), 255, np.uint8)},
        {"x": np.zeros((4, 6), np.uint8)},
        {"x": _ints(np.uint8, (4, 6), 4)},
    ]


CASES += [
    Case("bitshift_left_uint8", _bitshift("LEFT", False), "shift", "bitshift_uint8", _shift_edges),
    Case("bitshift_right_uint8", _bitshift("RIGHT", False), "shift", "bitshift_uint8", _shift_edges),
    Case("bitshift_left_const_shift", _bitshift("LEFT", True), "shift", "bitshift_uint8", _shift_const_edges),
]


# --- optional ------------------------------------------------------------------------------------


def optional_present():
    """Optional(x) read by OptionalHasElement and OptionalGetElement: presence known statically."""
    nodes = [
        h.make_node("Optional", ["x"], ["o"], name="opt"),
        h.make_node("OptionalHasElement", ["o"], ["has"], name="has"),
        h.make_node("OptionalGetElement", ["o"], ["e"], name="get"),
        h.make_node("Relu", ["e"], ["y"], name="relu"),
    ]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 3])], [_vi("has", T.BOOL, []), _vi("y", T.FLOAT, [2, 3])])


def optional_empty():
    """An empty Optional (type attribute only) and an omitted input: both have no element."""
    elem = h.make_tensor_type_proto(T.FLOAT, [2])
    nodes = [
        h.make_node("Optional", [], ["o"], name="opt_empty", type=elem),
        h.make_node("OptionalHasElement", ["o"], ["has"], name="has_empty"),
        h.make_node("OptionalHasElement", [], ["none"], name="has_omitted"),
        h.make_node("And", ["has", "none"], ["both"], name="and"),
        h.make_node("Not", ["both"], ["y"], name="not"),
    ]
    return _model(nodes, [], [_vi("y", T.BOOL, [])])


CASES += [
    Case("optional_present", optional_present, "opt", "optional_static",
         lambda: [{"x": np.array([[-1.0, 0.0, np.inf], [np.nan, -0.0, 3e38]], np.float32)}]),
    Case("optional_present_get", optional_present, "get", "optional_static"),
    Case("optional_empty", optional_empty, "opt_empty", "optional_static"),
    Case("optional_has_omitted", optional_empty, "has_omitted", "optional_static"),
]  # fmt: skip


# --- sequences -----------------------------------------------------------------------------------


def sequence_chain():
    """SplitToSequence -> SequenceErase -> SequenceInsert, read by SequenceAt, SequenceLength and
    ConcatFromSequence (new_axis=1)."""
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["s0"], name="split", axis=1, keepdims=0),
        h.make_node("SequenceErase", ["s0", "zero"], ["s1"], name="erase"),
        h.make_node("SequenceInsert", ["s1", "t", "one"], ["s2"], name="insert"),
        h.make_node("SequenceAt", ["s2", "minus_one"], ["last"], name="seq_at"),
        h.make_node("SequenceLength", ["s2"], ["n"], name="seq_len"),
        h.make_node("ConcatFromSequence", ["s2"], ["stack"], name="concat", axis=0, new_axis=1),
    ]
    inits = [_init("zero", np.array(0, np.int64)), _init("one", np.array(1, np.int64)),
             _init("minus_one", np.array(-1, np.int64))]  # fmt: skip
    return _model(nodes, [_vi("x", T.FLOAT, [3, 4]), _vi("t", T.FLOAT, [3])],
                  [_vi("last", T.FLOAT, [3]), _vi("n", T.INT64, []), _vi("stack", T.FLOAT, [4, 3])], inits)  # fmt: skip


def sequence_split_sizes():
    """SplitToSequence with split sizes, appended to (no position), concatenated back on axis 1."""
    nodes = [
        h.make_node("SplitToSequence", ["x", "sizes"], ["s0"], name="split", axis=1),
        h.make_node("SequenceInsert", ["s0", "t"], ["s1"], name="append"),
        h.make_node("ConcatFromSequence", ["s1"], ["y"], name="concat", axis=1),
    ]
    return _model(nodes, [_vi("x", T.INT64, [2, 7]), _vi("t", T.INT64, [2, 3])], [_vi("y", T.INT64, [2, 10])],
                  [_init("sizes", np.array([2, 5], np.int64))])  # fmt: skip


def sequence_split_scalar():
    """SplitToSequence in chunks of 2 along axis 0 of a [5, 2] tensor: the last chunk is shorter."""
    nodes = [
        h.make_node("SplitToSequence", ["x", "two"], ["s"], name="split"),
        h.make_node("SequenceAt", ["s", "two"], ["y"], name="seq_at"),
    ]
    return _model(
        nodes, [_vi("x", T.FLOAT, [5, 2])], [_vi("y", T.FLOAT, [1, 2])], [_init("two", np.array(2, np.int64))]
    )


def sequence_from_empty():
    """SequenceEmpty, then two inserts (append, then at position 0), concatenated."""
    nodes = [
        h.make_node("SequenceEmpty", [], ["s0"], name="empty", dtype=T.FLOAT),
        h.make_node("SequenceInsert", ["s0", "a"], ["s1"], name="append"),
        h.make_node("SequenceInsert", ["s1", "b", "zero"], ["s2"], name="prepend"),
        h.make_node("ConcatFromSequence", ["s2"], ["y"], name="concat", axis=0),
    ]
    return _model(nodes, [_vi("a", T.FLOAT, [2, 3]), _vi("b", T.FLOAT, [1, 3])], [_vi("y", T.FLOAT, [3, 3])],
                  [_init("zero", np.array(0, np.int64))])  # fmt: skip


CASES += [
    Case("sequence_at_after_split_erase_insert", sequence_chain, "seq_at", "sequence_at_static"),
    Case("sequence_length_static", sequence_chain, "seq_len", "sequence_length_static"),
    Case("concat_from_split_erase_insert", sequence_chain, "concat", "concat_from_static_sequence"),
    Case("split_to_sequence_sizes", sequence_split_sizes, "split", "concat_from_static_sequence",
         lambda: [{"x": np.full((2, 7), np.iinfo(np.int64).min), "t": np.full((2, 3), np.iinfo(np.int64).max)}]),
    Case("split_to_sequence_chunks", sequence_split_scalar, "split", "sequence_at_static"),
    Case("sequence_empty_inserts", sequence_from_empty, "empty", "concat_from_static_sequence"),
]  # fmt: skip


# --- MaxUnpool / MaxPool indices -----------------------------------------------------------------


def maxunpool_constant_indices():
    """MaxUnpool with constant duplicate-free indices (over the whole output, as MaxPool gives)."""
    idx = np.random.default_rng(20).permutation(32)[:8].reshape(1, 2, 2, 2).astype(np.int64)
    nodes = [h.make_node("MaxUnpool", ["x", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2])]
    return _model(
        nodes,
        [_vi("x", T.FLOAT, [1, 2, 2, 2])],
        [_vi("y", T.FLOAT, [1, 2, 4, 4])],
        [_init("i", idx)],
        opset=11,
    )


def maxpool_unpool():
    """SegNet: MaxPool's indices place decoder features back with MaxUnpool (odd width: floor mode
    drops the last column, output_shape restores it)."""
    nodes = [
        h.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Mul", ["p", "scale"], ["z"], name="decode"),
        h.make_node(
            "MaxUnpool", ["z", "i", "out_shape"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2]
        ),
    ]
    inits = [_init("scale", np.array(-2.0, np.float32)), _init("out_shape", np.array([2, 3, 6, 7], np.int64))]
    return _model(
        nodes, [_vi("x", T.FLOAT, [2, 3, 6, 7])], [_vi("y", T.FLOAT, [2, 3, 6, 7])], inits, opset=13
    )


def maxpool_indices_output():
    """MaxPool whose Indices are a graph output."""
    nodes = [h.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[3, 2], strides=[3, 2])]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 2, 7, 4])],
                  [_vi("p", T.FLOAT, [1, 2, 2, 2]), _vi("i", T.INT64, [1, 2, 2, 2])], opset=13)  # fmt: skip


def _pool_edges(shape):
    rng = np.random.default_rng(21)
    return lambda: [
        {"x": rng.integers(0, 3, shape).astype(np.float32)},  # ties inside windows
        {"x": np.full(shape, 1.5, np.float32)},  # every element ties
        {"x": -np.abs(_f32(*shape, seed=22)) - 1.0},  # all negative
        {"x": _f32(*shape, seed=23, scale=1e30)},
    ]


# --- AffineGrid ----------------------------------------------------------------------------------


def _affine_grid(size, align):
    def build():
        spatial = len(size) - 2
        nodes = [h.make_node("AffineGrid", ["theta", "size"], ["grid"], name="affine", align_corners=align)]
        return _model(nodes, [_vi("theta", T.FLOAT, [size[0], spatial, spatial + 1])],
                      [_vi("grid", T.FLOAT, [size[0], *size[2:], spatial])],
                      [_init("size", np.array(size, np.int64))], opset=20)  # fmt: skip

    return build


def _theta_edges(n, spatial):
    eye = np.concatenate([np.eye(spatial), np.zeros((spatial, 1))], 1)
    return lambda: [
        {"theta": np.repeat(eye[None], n, 0).astype(np.float32)},
        {"theta": _f32(n, spatial, spatial + 1, seed=24, scale=1e4)},
        {"theta": np.zeros((n, spatial, spatial + 1), np.float32)},
    ]


CASES += [
    Case("maxunpool_constant_indices", maxunpool_constant_indices, "unpool", "maxunpool_scatter",
         lambda: [{"x": np.array([-np.inf, np.inf, -0.0, 0, 1e38, -1e38, 1, -1], np.float32).reshape(1, 2, 2, 2)}]),
    Case("maxpool_unpool", maxpool_unpool, "unpool", "maxunpool_scatter", _pool_edges((2, 3, 6, 7))),
    Case("maxpool_indices_for_unpool", maxpool_unpool, "pool", "maxpool_indices_argmax", _pool_edges((2, 3, 6, 7))),
    Case("maxpool_indices_output", maxpool_indices_output, "pool", "maxpool_indices_argmax",
         _pool_edges((1, 2, 7, 4))),
    Case("affine_grid_2d", _affine_grid([2, 3, 4, 5], 0), "affine", "affine_grid_matmul", _theta_edges(2, 2)),
    Case("affine_grid_2d_align_corners", _affine_grid([1, 1, 3, 2], 1), "affine", "affine_grid_matmul",
         _theta_edges(1, 2)),
    Case("affine_grid_3d", _affine_grid([2, 1, 3, 4, 5], 1), "affine", "affine_grid_matmul", _theta_edges(2, 3)),
]  # fmt: skip


# --- CenterCropPad / Compress --------------------------------------------------------------------


def _center_crop_pad(shape, target, axes, out_shape, elem=T.FLOAT):
    def build():
        kw = {"axes": axes} if axes is not None else {}
        nodes = [h.make_node("CenterCropPad", ["x", "target"], ["y"], name="crop_pad", **kw)]
        return _model(nodes, [_vi("x", elem, shape)], [_vi("y", elem, out_shape)],
                      [_init("target", np.array(target, np.int64))])  # fmt: skip

    return build


def _compress(shape, condition, axis, out_shape, dynamic=False):
    def build():
        kw = {"axis": axis} if axis is not None else {}
        nodes = [h.make_node("Compress", ["x", "cond"], ["y"], name="compress", **kw)]
        ins = [_vi("x", T.FLOAT, shape)]
        inits = []
        if dynamic:
            ins.append(_vi("cond", T.BOOL, [len(condition)]))
        else:
            inits.append(_init("cond", np.array(condition, bool)))
        return _model(nodes, ins, [_vi("y", T.FLOAT, out_shape)], inits)

    return build


CASES += [
    Case("center_crop_pad_mixed", _center_crop_pad([3, 5, 4], [6, 2], [0, 1], [6, 2, 4]), "crop_pad",
         "center_crop_pad_slice", lambda: [{"x": _f32(3, 5, 4, seed=30, scale=1e30)}]),
    Case("center_crop_pad_all_axes_odd", _center_crop_pad([2, 7, 6], [1, 4, 9], None, [1, 4, 9]), "crop_pad",
         "center_crop_pad_slice"),
    Case("center_crop_int32", _center_crop_pad([1, 8, 8], [5, 5], [-2, -1], [1, 5, 5], T.INT32), "crop_pad",
         "center_crop_pad_slice", lambda: [{"x": _ints(np.int32, (1, 8, 8), 31)}]),
    Case("compress_axis_short_condition", _compress([4, 5], [False, True, True], 1, [4, 2]), "compress",
         "compress_to_gather"),
    Case("compress_flattened", _compress([4, 5], [True, False, False, True, True, False, True], None, [4]),
         "compress", "compress_to_gather"),
    Case("compress_empty_selection", _compress([4, 5], [False] * 4, 0, [0, 5]), "compress", "compress_to_gather"),
    Case("compress_dynamic_condition", _compress([4, 5], [True] * 5, 1, [4, "k"], dynamic=True), "compress",
         "compress_to_gather",
         lambda: [{"cond": np.zeros(5, bool)}, {"cond": np.ones(5, bool)},
                  {"cond": np.array([True, False, False, False, True])}]),
]  # fmt: skip


# --- Col2Im --------------------------------------------------------------------------------------


def _col2im(n, c, image, block, cols, **attrs):
    def build():
        k = int(np.prod(block))
        nodes = [h.make_node("Col2Im", ["x", "image", "block"], ["y"], name="col2im", **attrs)]
        return _model(nodes, [_vi("x", T.FLOAT, [n, c * k, cols])], [_vi("y", T.FLOAT, [n, c, *image])],
                      [_init("image", np.array(image, np.int64)), _init("block", np.array(block, np.int64))])  # fmt: skip

    return build


def _col2im_edges(shape):
    return lambda: [{"x": _f32(*shape, seed=32, scale=1e20)}, {"x": np.ones(shape, np.float32)},
                    {"x": np.full(shape, -3.0, np.float32)}]  # fmt: skip


CASES += [
    Case("col2im_overlapping", _col2im(2, 3, [5, 5], [2, 2], 16), "col2im", "col2im_gather", _col2im_edges((2, 12, 16))),
    Case("col2im_strided_padded_dilated", _col2im(1, 2, [6, 7], [3, 2], 6, strides=[2, 3], pads=[1, 0, 1, 2],
                                                  dilations=[2, 1]), "col2im", "col2im_gather",
         _col2im_edges((1, 12, 6))),
]  # fmt: skip


# --- DFT -----------------------------------------------------------------------------------------


def _dft(shape, out_shape, opset=17, length=None, axis=None, **attrs):
    def build():
        inputs, inits = ["x"], []
        if length is not None:
            inputs.append("length")
            inits.append(_init("length", np.array(length, np.int64)))
        if opset >= 20 and axis is not None:
            inputs += ["", "axis"] if length is None else ["axis"]
            inits.append(_init("axis", np.array(axis, np.int64)))
        elif axis is not None:
            attrs["axis"] = axis
        nodes = [h.make_node("DFT", inputs, ["y"], name="dft", **attrs)]
        return _model(nodes, [_vi("x", T.FLOAT, shape)], [_vi("y", T.FLOAT, out_shape)], inits, opset=opset)

    return build


def dft_model(shape, out_shape, **kw) -> onnx.ModelProto:
    return _dft(shape, out_shape, **kw)()


def _dft_edges(shape):
    impulse = np.zeros(shape, np.float32)
    impulse[(0,) * len(shape)] = 1.0
    return lambda: [
        {"x": impulse},
        {"x": np.ones(shape, np.float32)},
        {"x": _f32(*shape, seed=33, scale=1e10)},
    ]


CASES += [
    Case("dft_real_forward", _dft([2, 16, 1], [2, 16, 2]), "dft", "dft_matmul", _dft_edges((2, 16, 1))),
    Case("dft_real_onesided_padded", _dft([2, 12, 1], [2, 11, 2], length=20, onesided=1), "dft", "dft_matmul",
         _dft_edges((2, 12, 1))),
    Case("dft_complex_inverse_truncated", _dft([3, 10, 2], [3, 7, 2], length=7, inverse=1), "dft", "dft_matmul",
         _dft_edges((3, 10, 2))),
    Case("dft_opset20_axis", _dft([2, 5, 8, 2], [2, 5, 8, 2], opset=20, axis=-2), "dft", "dft_matmul",
         _dft_edges((2, 5, 8, 2))),
    Case("dft_opset20_first_axis", _dft([6, 4, 2], [6, 4, 2], opset=20, axis=0), "dft", "dft_matmul",
         _dft_edges((6, 4, 2))),
]  # fmt: skip


# --- losses --------------------------------------------------------------------------------------


def _loss(op, shape, reduction, weight=False, ignore=None, log_prob=False, opset=13, tdtype=T.INT64):
    def build():
        n, c, *rest = shape
        attrs = {"reduction": reduction}
        if ignore is not None:
            attrs["ignore_index"] = ignore
        outs = ["loss", "log_prob"] if log_prob else ["loss"]
        nodes = [h.make_node(op, ["x", "t", "w"] if weight else ["x", "t"], outs, name="loss", **attrs)]
        inits = [_init("w", np.linspace(0.25, 2.0, c).astype(np.float32))] if weight else []
        loss_shape = [n, *rest] if reduction == "none" else []
        outputs = [_vi("loss", T.FLOAT, loss_shape)] + ([_vi("log_prob", T.FLOAT, shape)] if log_prob else [])
        return _model(
            nodes, [_vi("x", T.FLOAT, shape), _vi("t", tdtype, [n, *rest])], outputs, inits, opset=opset
        )

    return build


def _loss_edges(shape, ignore, tdtype=np.int64, log_input=True):
    n, c, *rest = shape
    tshape = (n, *rest)
    x = -np.abs(_f32(*shape, seed=34)) if log_input else _f32(*shape, seed=34, scale=30.0)
    edges = [
        {"x": x, "t": np.zeros(tshape, tdtype)},
        {"x": x, "t": np.full(tshape, c - 1, tdtype)},
        {
            "x": np.zeros(shape, np.float32),
            "t": np.arange(int(np.prod(tshape))).reshape(tshape).astype(tdtype) % c,
        },
    ]
    if ignore is not None:
        edges.append({"x": x, "t": np.full(tshape, ignore, tdtype)})  # every element ignored: mean is NaN
        mixed = np.arange(int(np.prod(tshape))).reshape(tshape).astype(tdtype) % c
        mixed.reshape(-1)[::2] = ignore
        x_inf = x.copy()
        x_inf[:, 0] = -np.inf  # ignored elements gather class 0: -inf must not leak into the loss
        edges.append({"x": x_inf, "t": mixed})
    return lambda: edges


CASES += [
    Case("nll_mean_weight_ignore_negative", _loss("NegativeLogLikelihoodLoss", [4, 8], "mean", True, -100),
         "loss", "nll_loss_decompose", _loss_edges((4, 8), -100)),
    Case("nll_sum_spatial_ignore_in_range", _loss("NegativeLogLikelihoodLoss", [2, 8, 3, 2], "sum", False, 3),
         "loss", "nll_loss_decompose", _loss_edges((2, 8, 3, 2), 3)),
    Case("nll_none_weight_int32", _loss("NegativeLogLikelihoodLoss", [3, 8, 5], "none", True, tdtype=T.INT32),
         "loss", "nll_loss_decompose", _loss_edges((3, 8, 5), None, np.int32)),
    Case("nll_mean_plain_opset12", _loss("NegativeLogLikelihoodLoss", [5, 8], "mean", opset=12), "loss",
         "nll_loss_decompose", _loss_edges((5, 8), None)),
    Case("sce_mean_weight_ignore_log_prob", _loss("SoftmaxCrossEntropyLoss", [4, 8, 3], "mean", True, 0, True),
         "loss", "softmax_cross_entropy_decompose", _loss_edges((4, 8, 3), 0, log_input=False)),
    Case("sce_none", _loss("SoftmaxCrossEntropyLoss", [6, 8], "none"), "loss", "softmax_cross_entropy_decompose",
         _loss_edges((6, 8), None, log_input=False)),
    Case("sce_sum_ignore_opset12", _loss("SoftmaxCrossEntropyLoss", [4, 8], "sum", False, -1, opset=12), "loss",
         "softmax_cross_entropy_decompose", _loss_edges((4, 8), -1, log_input=False)),
]  # fmt: skip


# --- constant inputs: fold_constants evaluates the op -------------------------------------------


def mel_weight_matrix():
    """MelWeightMatrix (all inputs constant, as in every spectrogram front end) applied to a
    power spectrum with MatMul."""
    nodes = [
        h.make_node("MelWeightMatrix", ["bins", "dft_len", "rate", "low", "high"], ["mel"], name="mel"),
        h.make_node("MatMul", ["x", "mel"], ["y"], name="apply_mel"),
    ]
    inits = [_init("bins", np.array(6, np.int64)), _init("dft_len", np.array(16, np.int64)),
             _init("rate", np.array(8000, np.int64)), _init("low", np.array(0.0, np.float32)),
             _init("high", np.array(4000.0, np.float32))]  # fmt: skip
    return _model(nodes, [_vi("x", T.FLOAT, [3, 9])], [_vi("y", T.FLOAT, [3, 6])], inits)


def unique_constant():
    """Unique of a constant label table (all four outputs), used to index the input."""
    table = np.array([[3, 1], [3, 1], [0, 2], [5, 1]], np.int64)
    nodes = [
        h.make_node(
            "Unique", ["table"], ["u", "first", "inverse", "counts"], name="unique", sorted=1, axis=0
        ),
        h.make_node("Gather", ["x", "inverse"], ["y"], name="by_inverse", axis=0),
        h.make_node("Gather", ["x", "first"], ["z"], name="by_first", axis=0),
        h.make_node("Unsqueeze", ["counts", "one"], ["counts2"], name="unsq"),
        h.make_node("Concat", ["u", "counts2"], ["uc"], name="concat", axis=1),
    ]
    inits = [_init("table", table), _init("one", np.array([1], np.int64))]
    return _model(nodes, [_vi("x", T.FLOAT, [6, 2])],
                  [_vi("y", T.FLOAT, [4, 2]), _vi("z", T.FLOAT, [3, 2]), _vi("uc", T.INT64, [3, 3])], inits)  # fmt: skip


CASES += [
    Case("mel_weight_matrix_constant", mel_weight_matrix, "mel", "fold_constants"),
    Case("unique_constant", unique_constant, "unique", "fold_constants"),
]


# --- SequenceMap ---------------------------------------------------------------------------------


def sequence_map():
    """SequenceMap over a split and a constructed sequence with an extra tensor input; the body's
    tensor names shadow outer ones ('t', 'x'); the results are concatenated."""
    body = h.make_graph(
        [
            h.make_node("Mul", ["x", "t"], ["m"], name="body_mul"),
            h.make_node("Add", ["m", "s"], ["o"], name="body_add"),
        ],
        "body",
        [_vi("x", T.FLOAT, [2, 1]), _vi("s", T.FLOAT, [2, 1]), _vi("t", T.FLOAT, [2, 1])],
        [_vi("o", T.FLOAT, [2, 1])],
    )
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["xs"], name="split", axis=1),
        h.make_node("SequenceConstruct", ["a", "a", "b"], ["ss"], name="construct"),
        h.make_node("SequenceMap", ["xs", "ss", "t"], ["os"], name="seq_map", body=body),
        h.make_node("ConcatFromSequence", ["os"], ["y"], name="concat", axis=1),
    ]
    ins = [
        _vi("x", T.FLOAT, [2, 3]),
        _vi("a", T.FLOAT, [2, 1]),
        _vi("b", T.FLOAT, [2, 1]),
        _vi("t", T.FLOAT, [2, 1]),
    ]
    return _model(nodes, ins, [_vi("y", T.FLOAT, [2, 3])], opset=17)


CASES += [Case("sequence_map_unrolled", sequence_map, "seq_map", "sequence_map_unroll")]


def sequence_at_runtime_position():
    """SequenceAt with a run-time position (negative values count from the end) over a tensor
    split into equal parts."""
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["s"], name="split", axis=0, keepdims=0),
        h.make_node("SequenceAt", ["s", "pos"], ["y"], name="seq_at"),
    ]
    # 8 parts: the verifier's random integers are 0..7
    return _model(nodes, [_vi("x", T.FLOAT, [8, 3]), _vi("pos", T.INT64, [])], [_vi("y", T.FLOAT, [3])])


CASES += [
    Case("sequence_at_runtime_position", sequence_at_runtime_position, "seq_at", "sequence_at_static",
         lambda: [{"pos": np.array(p, np.int64)} for p in (-8, -1, 0, 7)]),
]  # fmt: skip
