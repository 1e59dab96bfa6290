"""A corpus of tiny ONNX models, one per pattern TensorRT's ONNX parser rejects or restricts.

Each :class:`Case` builds its model with ``onnx.helper`` (nothing committed), names the node
``surgery check`` must report, the rule that must fix it, and edge-case inputs on top of the random
ones used by the verifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


@dataclass
class Case:
    name: str
    build: Callable[[], onnx.ModelProto]
    anchor: str  # node name check reports
    rule: str
    edge: Callable[[], list[dict[str, np.ndarray]]] = field(default=lambda: [])
    plugins: dict[str, tuple[str, str]] | None = None
    # A model ONNX Runtime runs in place of the original when the original cannot run (invalid ONNX).
    reference: Callable[[], onnx.ModelProto] | None = None


def _model(nodes, inputs, outputs, inits=(), opset=17, functions=(), extra_opsets=()):
    graph = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [h.make_opsetid("", opset), *extra_opsets]
    model = h.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8 if opset < 19 else 9
    onnx.checker.check_model(model)
    return model


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def _f32(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# --- fold_constants -------------------------------------------------------------------------


def reduce_axes_computed():
    """ReduceSum whose axes come from Add(const, const): TensorRT wants an initializer."""
    nodes = [
        h.make_node("Add", ["a0", "a1"], ["axes"], name="axes_add"),
        h.make_node("ReduceSum", ["x", "axes"], ["y"], name="reduce", keepdims=0),
    ]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 3, 4])], [_vi("y", T.FLOAT, [2, 3])],
                  [_init("a0", np.array([1], np.int64)), _init("a1", np.array([1], np.int64))])  # fmt: skip


def cumsum_axis_from_shape():
    """CumSum axis = Size(Shape(x)) - 1 on a statically shaped x: a shape subgraph to fold."""
    nodes = [
        h.make_node("Shape", ["x"], ["s"], name="shape"),
        h.make_node("Size", ["s"], ["rank"], name="size"),
        h.make_node("Sub", ["rank", "one"], ["axis"], name="last_axis"),
        h.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum"),
    ]
    return _model(
        nodes, [_vi("x", T.FLOAT, [2, 5])], [_vi("y", T.FLOAT, [2, 5])], [_init("one", np.array(1, np.int64))]
    )


# --- double_to_float --------------------------------------------------------------------------


def double_compute():
    nodes = [
        h.make_node("Cast", ["x"], ["xd"], name="to_double", to=T.DOUBLE),
        h.make_node("Mul", ["xd", "k"], ["m"], name="mul_double"),
        h.make_node("Add", ["m", "b"], ["a"], name="add_double"),
        h.make_node("Cast", ["a"], ["y"], name="to_float", to=T.FLOAT),
    ]
    return _model(nodes, [_vi("x", T.FLOAT, [4, 6])], [_vi("y", T.FLOAT, [4, 6])],
                  [_init("k", np.array(0.5, np.float64)), _init("b", np.linspace(-1, 1, 6))])  # fmt: skip


# --- dequantize_bias ------------------------------------------------------------------------


def conv_int32_bias():
    """Q/DQ Conv with an INT32 bias through DequantizeLinear (what quantizers emit)."""
    w = np.random.default_rng(1).integers(-50, 50, (4, 3, 3, 3)).astype(np.int8)
    bias = np.array([100, -200, 300, 7], np.int32)
    nodes = [
        h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x"),
        h.make_node("DequantizeLinear", ["w", "ws"], ["wd"], name="dq_w", axis=0),
        h.make_node("DequantizeLinear", ["b", "bs"], ["bd"], name="dq_bias", axis=0),
        h.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    ws = np.array([0.01, 0.02, 0.015, 0.03], np.float32)
    inits = [_init("xs", np.array(0.05, np.float32)), _init("xz", np.array(0, np.int8)), _init("w", w),
             _init("ws", ws), _init("b", bias), _init("bs", (0.05 * ws).astype(np.float32))]  # fmt: skip
    return _model(
        nodes, [_vi("x", T.FLOAT, [1, 3, 6, 6])], [_vi("y", T.FLOAT, [1, 4, 6, 6])], inits, opset=13
    )


def gemm_fake_quant_bias():
    """Gemm whose bias goes through QuantizeLinear -> DequantizeLinear of a float constant."""
    nodes = [
        h.make_node("QuantizeLinear", ["bf", "bs", "bz"], ["bq"], name="q_bias"),
        h.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], name="dq_bias"),
        h.make_node("Gemm", ["x", "w", "bd"], ["y"], name="gemm"),
    ]
    inits = [_init("bf", np.array([0.3, -1.27, 0.004, 2.0], np.float32)), _init("bs", np.array(0.01, np.float32)),
             _init("bz", np.array(3, np.int8)), _init("w", _f32(5, 4, seed=2))]  # fmt: skip
    return _model(nodes, [_vi("x", T.FLOAT, [3, 5])], [_vi("y", T.FLOAT, [3, 4])], inits, opset=13)


# --- sequence_to_concat ---------------------------------------------------------------------


def _sequence(new_axis: int, axis: int, out_shape):
    nodes = [
        h.make_node("Relu", ["a"], ["ra"], name="relu"),
        h.make_node("SequenceConstruct", ["ra", "b", "c"], ["seq"], name="seq_construct"),
        h.make_node("ConcatFromSequence", ["seq"], ["y"], name="concat_seq", axis=axis, new_axis=new_axis),
    ]
    ins = [_vi(n, T.FLOAT, [2, 3]) for n in ("a", "b", "c")]
    return _model(nodes, ins, [_vi("y", T.FLOAT, out_shape)])


def sequence_concat():
    return _sequence(0, 1, [2, 9])


def sequence_stack():
    return _sequence(1, -1, [2, 3, 3])


# --- integer ops ------------------------------------------------------------------------------


def conv_integer():
    w = np.random.default_rng(3).integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    nodes = [h.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], name="conv_int", pads=[1, 1, 1, 1])]
    inits = [_init("w", w), _init("xz", np.array(128, np.uint8)), _init("wz", np.array(120, np.uint8))]
    return _model(
        nodes, [_vi("x", T.UINT8, [1, 3, 5, 5])], [_vi("y", T.INT32, [1, 4, 5, 5])], inits, opset=13
    )


def _uint8_edges(name, shape):
    return lambda: [{name: np.full(shape, 255, np.uint8)}, {name: np.zeros(shape, np.uint8)}]


def matmul_integer():
    # uint8 B: ONNX Runtime's x86 u8*s8 kernel saturates int16 pair sums, so an int8 B would make
    # the *reference* inexact (its output differs from the ONNX formula at a = 255).
    b = np.random.default_rng(4).integers(0, 256, (16, 6)).astype(np.uint8)
    nodes = [h.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"], name="matmul_int")]
    inits = [
        _init("b", b),
        _init("az", np.array(7, np.uint8)),
        _init("bz", np.arange(6, dtype=np.uint8) + 120),
    ]
    return _model(nodes, [_vi("a", T.UINT8, [3, 16])], [_vi("y", T.INT32, [3, 6])], inits, opset=13)


# --- resize_constant_scales -----------------------------------------------------------------


def resize_computed_sizes():
    """sizes = Concat(Shape(x)[0:2], [16, 24]) with a dynamic batch: cannot fold, can be scales."""
    nodes = [
        h.make_node("Shape", ["x"], ["s"], name="shape"),
        h.make_node("Slice", ["s", "zero", "two"], ["nc"], name="slice_nc"),
        h.make_node("Concat", ["nc", "hw"], ["sizes"], name="sizes", axis=0),
        h.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="resize", mode="nearest"),
    ]
    inits = [_init("zero", np.array([0], np.int64)), _init("two", np.array([2], np.int64)),
             _init("hw", np.array([16, 24], np.int64))]  # fmt: skip
    return _model(
        nodes, [_vi("x", T.FLOAT, ["N", 3, 8, 8])], [_vi("y", T.FLOAT, ["N", 3, 16, 24])], inits, opset=13
    )


# --- scatternd_reduction --------------------------------------------------------------------


def scatternd_add():
    nodes = [h.make_node("ScatterND", ["x", "idx", "u"], ["y"], name="scatter_add", reduction="add")]
    inits = [_init("idx", np.array([[0, 1], [2, 3], [1, 0]], np.int64))]
    return _model(
        nodes,
        [_vi("x", T.FLOAT, [3, 4]), _vi("u", T.FLOAT, [3])],
        [_vi("y", T.FLOAT, [3, 4])],
        inits,
        opset=16,
    )


# --- topk_split -----------------------------------------------------------------------------


def topk_large():
    nodes = [h.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=1)]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 9000])], [_vi("v", T.FLOAT, [2, 5000]), _vi("i", T.INT64, [2, 5000])],
                  [_init("k", np.array([5000], np.int64))])  # fmt: skip


def _topk_edges():
    rng = np.random.default_rng(5)
    ties = rng.integers(0, 5, (2, 9000)).astype(np.float32)  # heavy ties: order by index
    return [{"x": ties}, {"x": np.zeros((2, 9000), np.float32)}, {"x": _f32(2, 9000, seed=6, scale=1e30)}]


# --- if_constant_branch ---------------------------------------------------------------------


def if_constant_condition():
    """An If on a constant True whose else branch uses a sequence op TensorRT rejects."""
    then_g = h.make_graph(
        [h.make_node("Add", ["x", "x"], ["t"], name="then_add")], "then", [], [_vi("t", T.FLOAT, [2, 3])]
    )
    else_nodes = [
        h.make_node("SequenceConstruct", ["x", "x"], ["sq"], name="else_seq"),
        h.make_node("SequenceAt", ["sq", "zero_i"], ["e"], name="else_at"),
    ]
    else_g = h.make_graph(else_nodes, "else", [], [_vi("e", T.FLOAT, [2, 3])],
                          initializer=[_init("zero_i", np.array(0, np.int64))])  # fmt: skip
    nodes = [
        h.make_node("Constant", [], ["cond"], name="cond", value=nh.from_array(np.array(True))),
        h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 3])], [_vi("y", T.FLOAT, [2, 3])])


# --- inline_local_functions -----------------------------------------------------------------


def function_with_matmulinteger():
    """A local function whose body uses MatMulInteger (rejected) called from the main graph."""
    body = [h.make_node("MatMulInteger", ["A", "B"], ["Y"], name="fn_mmi")]
    fn = h.make_function("custom.fns", "IntLinear", ["A", "B"], ["Y"], body, [h.make_opsetid("", 13)])
    nodes = [h.make_node("IntLinear", ["a", "b"], ["y"], name="call_int_linear", domain="custom.fns")]
    b = np.random.default_rng(7).integers(0, 256, (12, 5)).astype(np.uint8)
    return _model(nodes, [_vi("a", T.UINT8, [4, 12])], [_vi("y", T.INT32, [4, 5])], [_init("b", b)], opset=13,
                  functions=[fn], extra_opsets=[h.make_opsetid("custom.fns", 1)])  # fmt: skip


# --- layernorm_fusion -----------------------------------------------------------------------


def layernorm_decomposed():
    nodes = [
        h.make_node("ReduceMean", ["x"], ["m"], name="ln_mean", axes=[-1]),
        h.make_node("Sub", ["x", "m"], ["d"], name="ln_sub"),
        h.make_node("Pow", ["d", "two"], ["p"], name="ln_pow"),
        h.make_node("ReduceMean", ["p"], ["v"], name="ln_var", axes=[-1]),
        h.make_node("Add", ["v", "eps"], ["ve"], name="ln_add_eps"),
        h.make_node("Sqrt", ["ve"], ["s"], name="ln_sqrt"),
        h.make_node("Div", ["d", "s"], ["n"], name="ln_div"),
        h.make_node("Mul", ["n", "gamma"], ["g"], name="ln_scale"),
        h.make_node("Add", ["g", "beta"], ["y"], name="ln_shift"),
    ]
    inits = [_init("two", np.array(2.0, np.float32)), _init("eps", np.array(1e-5, np.float32)),
             _init("gamma", _f32(16, seed=8)), _init("beta", _f32(16, seed=9))]  # fmt: skip
    return _model(nodes, [_vi("x", T.FLOAT, [2, 5, 16])], [_vi("y", T.FLOAT, [2, 5, 16])], inits, opset=17)


def _ln_edges():
    const_rows = np.ones((2, 5, 16), np.float32) * 3.0  # zero variance
    return [{"x": const_rows}, {"x": _f32(2, 5, 16, seed=10, scale=100.0)}]


# --- pow_square_to_mul ----------------------------------------------------------------------


def pow_square():
    nodes = [h.make_node("Pow", ["x", "two"], ["y"], name="square")]
    return _model(
        nodes,
        [_vi("x", T.FLOAT, [3, 7])],
        [_vi("y", T.FLOAT, [3, 7])],
        [_init("two", np.array(2.0, np.float32))],
    )


def _pow_edges():
    return [{"x": np.array([[-3.0, -0.0, 0.0, 1e19, -1e19, 1e-30, np.inf]] * 3, np.float32)}]


# --- plugin_mapping -------------------------------------------------------------------------


def det_op():
    """Det is not supported by TensorRT's parser; the user maps it to a plugin."""
    nodes = [h.make_node("Det", ["x"], ["y"], name="det")]
    return _model(nodes, [_vi("x", T.FLOAT, [4, 3, 3])], [_vi("y", T.FLOAT, [4])], opset=13)


# --- QOperator models (qlinear_*, qdq_to_float, dynamic_quantize_linear) ----------------------


def _qmodel(nodes, inputs, outputs, inits, opset=13, contrib=False):
    extra = [h.make_opsetid("com.microsoft", 1)] if contrib else []
    graph = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), *extra])
    model.ir_version = 8
    if not contrib:
        onnx.checker.check_model(model)
    return model


def _full_range(name, shape, dtype, seed):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return lambda: [
        {name: rng.integers(info.min, info.max + 1, shape).astype(dtype)},  # the whole 8-bit range
        {name: np.full(shape, info.max, dtype)},  # saturation
        {name: np.full(shape, info.min, dtype)},
    ]


def qlinear_conv_uint8():
    """ORT's default QOperator layout: UINT8 activations with zero points, INT8 per-channel weights,
    INT32 bias. Output multipliers 0.5, 1, 0.25, 2 (exact in FP32) make half-way ties common."""
    w = np.random.default_rng(20).integers(-60, 61, (4, 3, 3, 3)).astype(np.int8)
    inits = [_init("xs", np.float32(0.25)), _init("xz", np.uint8(128)), _init("w", w),
             _init("ws", np.array([0.5, 1.0, 0.25, 2.0], np.float32)), _init("wz", np.zeros(4, np.int8)),
             _init("ys", np.float32(0.25)), _init("yz", np.uint8(100)),
             _init("b", np.array([1, -3, 1000, -77], np.int32))]  # fmt: skip
    node = h.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], name="qconv",
                       pads=[1, 1, 1, 1])  # fmt: skip
    return _qmodel([node], [_vi("x", T.UINT8, [1, 3, 6, 6])], [_vi("y", T.UINT8, [1, 4, 6, 6])], inits)


def qlinear_conv_int8_symmetric():
    """INT8, zero points 0 (TensorRT's own Q/DQ form), grouped and strided, no bias."""
    # 7-bit weights, as ORT's reduce_range: its x86 kernels without VNNI saturate int16 pair sums of
    # 8-bit products, which would make the reference itself depart from the ONNX formula
    w = np.random.default_rng(21).integers(-63, 64, (6, 2, 3, 3)).astype(np.int8)
    inits = [_init("xs", np.float32(0.02)), _init("xz", np.int8(0)), _init("w", w),
             _init("ws", np.float32(0.005)), _init("wz", np.int8(0)),
             _init("ys", np.float32(0.03)), _init("yz", np.int8(0))]  # fmt: skip
    node = h.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qconv_sym",
                       group=2, strides=[2, 2], pads=[1, 1, 1, 1])  # fmt: skip
    return _qmodel([node], [_vi("x", T.INT8, [1, 4, 7, 7])], [_vi("y", T.INT8, [1, 6, 4, 4])], inits)


def qlinear_matmul_per_column():
    """UINT8 A and B, B's zero point and scale per column (ONNX allows it; ORT computes it)."""
    b = np.random.default_rng(22).integers(0, 256, (16, 5)).astype(np.uint8)
    inits = [_init("as", np.float32(0.1)), _init("az", np.uint8(7)), _init("b", b),
             _init("bs", np.array([0.01, 0.02, 0.04, 0.005, 0.03], np.float32)),
             _init("bz", np.array([128, 120, 130, 0, 255], np.uint8)),
             _init("ys", np.float32(0.8)), _init("yz", np.uint8(60))]  # fmt: skip
    node = h.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], name="qmatmul")
    return _qmodel([node], [_vi("a", T.UINT8, [3, 16])], [_vi("y", T.UINT8, [3, 5])], inits)


def qdq_uint8_through_maxpool():
    """What ORT's QOperator models do between layers: QuantizeLinear to UINT8 with a zero point,
    MaxPool and Reshape on the UINT8 tensor, DequantizeLinear back."""
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
        h.make_node("MaxPool", ["q"], ["p"], name="pool_u8", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Reshape", ["p", "shape"], ["r"], name="reshape_u8"),
        h.make_node("DequantizeLinear", ["r", "s", "z"], ["y"], name="dequant"),
    ]
    inits = [
        _init("s", np.float32(0.05)),
        _init("z", np.uint8(131)),
        _init("shape", np.array([1, -1], np.int64)),
    ]
    return _qmodel(nodes, [_vi("x", T.FLOAT, [1, 2, 4, 6])], [_vi("y", T.FLOAT, [1, 12])], inits)


def _qdq_edges():
    s = np.float32(0.05)
    k = np.random.default_rng(23).integers(-200, 200, (1, 2, 4, 6))
    return [
        {"x": ((k + 0.5) * s).astype(np.float32)},  # every value a rounding tie
        {"x": np.full((1, 2, 4, 6), 1e6, np.float32)},  # saturation at 255
        {"x": np.full((1, 2, 4, 6), -1e6, np.float32)},  # and at 0
    ]


def dynamic_quantize():
    node = h.make_node("DynamicQuantizeLinear", ["x"], ["y", "y_scale", "y_zp"], name="dql")
    outs = [_vi("y", T.UINT8, ["N", 5]), _vi("y_scale", T.FLOAT, []), _vi("y_zp", T.UINT8, [])]
    return _qmodel([node], [_vi("x", T.FLOAT, ["N", 5])], outs, [])


def dynamic_matmul_integer():
    """What ``quantize_dynamic`` makes of a MatMul: DynamicQuantizeLinear, then MatMulInteger with the
    run-time zero point, K = 300 (> 258: exact by the bound from the constant B)."""
    b = np.random.default_rng(37).integers(-20, 21, (300, 6)).astype(np.int8)
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql_x"),
        h.make_node("MatMulInteger", ["xq", "b", "xz"], ["acc"], name="mmi_dynamic"),
        h.make_node("Cast", ["acc"], ["acc_f"], name="acc_float", to=T.FLOAT),
        h.make_node("Mul", ["xs", "bs"], ["scale"], name="scale"),
        h.make_node("Mul", ["acc_f", "scale"], ["y"], name="rescale"),
    ]
    inits = [_init("b", b), _init("bs", np.float32(0.01))]
    return _qmodel(nodes, [_vi("x", T.FLOAT, [4, 300])], [_vi("y", T.FLOAT, [4, 6])], inits)


def dynamic_conv_integer():
    """``quantize_dynamic`` on a Conv: DynamicQuantizeLinear, ConvInteger with the run-time zero point
    and UINT8 weights around their zero point, 32 * 3 * 3 = 288 terms (> 258: bound from the weights)."""
    w = (128 + np.random.default_rng(39).integers(-20, 21, (4, 32, 3, 3))).astype(np.uint8)
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql_conv"),
        h.make_node(
            "ConvInteger", ["xq", "w", "xz", "wz"], ["acc"], name="convint_dynamic", pads=[1, 1, 1, 1]
        ),
        h.make_node("Cast", ["acc"], ["acc_f"], name="conv_acc_float", to=T.FLOAT),
        h.make_node("Mul", ["acc_f", "xs"], ["y"], name="conv_rescale"),
    ]
    inits = [_init("w", w), _init("wz", np.uint8(128))]
    return _qmodel(nodes, [_vi("x", T.FLOAT, [1, 32, 5, 5])], [_vi("y", T.FLOAT, [1, 4, 5, 5])], inits)


def _dql_edges():
    rows = [{"x": np.zeros((0, 5), np.float32)}, {"x": np.zeros((2, 5), np.float32)},  # empty, all zero
            {"x": np.full((2, 5), -3.0, np.float32)}, {"x": np.full((2, 5), 1e30, np.float32)}]  # fmt: skip
    for a in (1, 3, 64, 127, 999):  # x_min = -x_max: the zero point lands on a tie (127.5)
        rows.append({"x": np.array([[-a / 64, a / 64, (2 * a + 1) / 128, 0.0, 1e-3]], np.float32)})
    return rows


def _contrib(op, inputs, out, attrs=None, name="qop", shape=(1, 3, 4, 4), dtype=np.uint8):
    elem = T.UINT8 if dtype == np.uint8 else T.INT8
    node = h.make_node(op, [n for n, _ in inputs], ["y"], name=name, domain="com.microsoft", **(attrs or {}))
    inits = [_init(n, v) for n, v in inputs if v is not None]
    feeds = [n for n, v in inputs if v is None]
    return _qmodel([node], [_vi(n, elem, list(shape)) for n in feeds], [_vi("y", elem, list(out))], inits,
                   contrib=True)  # fmt: skip


def qlinear_sigmoid():
    ins = [("x", None), ("xs", np.float32(0.07)), ("xz", np.uint8(120)), ("ys", np.float32(1 / 256)),
           ("yz", np.uint8(0))]  # fmt: skip
    return _contrib("QLinearSigmoid", ins, (1, 3, 4, 4), name="qsigmoid")


def qlinear_leaky_relu():
    ins = [("x", None), ("xs", np.float32(0.05)), ("xz", np.int8(-10)), ("ys", np.float32(0.04)),
           ("yz", np.int8(-60))]  # fmt: skip
    return _contrib("QLinearLeakyRelu", ins, (1, 3, 4, 4), {"alpha": 0.1}, "qleaky", dtype=np.int8)


def qlinear_add_broadcast():
    """INT8 add of a tensor and a per-channel constant (broadcast), scales with many ties."""
    b = np.random.default_rng(24).integers(-128, 128, (1, 3, 1, 1)).astype(np.int8)
    ins = [("x", None), ("xs", np.float32(0.02)), ("xz", np.int8(3)), ("b", b), ("bs", np.float32(0.05)),
           ("bz", np.int8(-7)), ("ys", np.float32(0.04)), ("yz", np.int8(5))]  # fmt: skip
    return _contrib("QLinearAdd", ins, (1, 3, 4, 4), name="qadd", dtype=np.int8)


def qlinear_mul():
    ins = [("x", None), ("xs", np.float32(0.02)), ("xz", np.uint8(130)), ("x2", None), ("x2s", np.float32(0.05)),
           ("x2z", np.uint8(97)), ("ys", np.float32(0.04)), ("yz", np.uint8(125))]  # fmt: skip
    return _contrib("QLinearMul", ins, (1, 3, 4, 4), name="qmul")


def qlinear_average_pool():
    ins = [("x", None), ("xs", np.float32(0.013)), ("xz", np.int8(-5)), ("ys", np.float32(0.011)),
           ("yz", np.int8(9))]  # fmt: skip
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0}
    return _contrib(
        "QLinearAveragePool", ins, (1, 3, 4, 4), attrs, "qavgpool", shape=(1, 3, 7, 7), dtype=np.int8
    )


def qlinear_global_average_pool():
    ins = [("x", None), ("xs", np.float32(0.05)), ("xz", np.uint8(100)), ("ys", np.float32(0.025)),
           ("yz", np.uint8(30))]  # fmt: skip
    return _contrib(
        "QLinearGlobalAveragePool", ins, (1, 3, 1, 1), {"channels_last": 0}, "qgap", shape=(1, 3, 5, 4)
    )


def qlinear_concat():
    """Three inputs: one already at the output's scale and zero point, two requantized."""
    ins = [("ys", np.float32(0.05)), ("yz", np.uint8(128)),
           ("a", None), ("as", np.float32(0.05)), ("az", np.uint8(128)),
           ("b", None), ("bs", np.float32(0.0125)), ("bz", np.uint8(3)),
           ("c", None), ("cs", np.float32(0.2)), ("cz", np.uint8(250))]  # fmt: skip
    return _contrib("QLinearConcat", ins, (1, 9, 4, 4), {"axis": 1}, "qconcat")


def qlinear_softmax(dtype=np.uint8, opset_attr=13):
    """Softmax over rows of 10 (the ORT kernel's exp table depends on the row length)."""
    zp = np.uint8(0) if dtype == np.uint8 else np.int8(-128)
    ins = [
        ("x", None),
        ("xs", np.float32(0.1)),
        ("xz", np.array(7, dtype)),
        ("ys", np.float32(1 / 256)),
        ("yz", zp),
    ]
    axis = {"axis": 1} if opset_attr < 13 else {"axis": -1}
    return _contrib("QLinearSoftmax", ins, (4, 10), {**axis, "opset": opset_attr}, "qsoftmax", shape=(4, 10),
                    dtype=dtype)  # fmt: skip


def _softmax_edges(dtype):
    info = np.iinfo(dtype)
    one_hot = np.full((4, 10), info.min, dtype)
    one_hot[:, 3] = info.max  # probability 1 at one place: ORT's INT8 conversion wraps 128 to -128
    rng = np.random.default_rng(30)
    return lambda: [{"x": one_hot}, {"x": np.full((4, 10), 5, dtype)},  # all equal: 1/10 each
                    {"x": rng.integers(info.min, info.max + 1, (4, 10)).astype(dtype)}]  # fmt: skip


def qgemm(quantized_output=True):
    """ORT's QGemm: transposed INT8 weights with per-column scales, INT32 bias, alpha != 1."""
    rng = np.random.default_rng(33)
    ins = [("a", None), ("as", np.float32(0.05)), ("az", np.uint8(100)),
           ("b", rng.integers(-63, 64, (5, 12)).astype(np.int8)),  # 7-bit: see qlinear_conv_int8_symmetric
           ("bs", np.array([0.01, 0.02, 0.005, 0.04, 0.03], np.float32)), ("bz", np.zeros(5, np.int8)),
           ("c", rng.integers(-3000, 3000, 5).astype(np.int32))]  # fmt: skip
    if quantized_output:
        ins += [("ys", np.float32(0.5)), ("yz", np.uint8(128))]
    node = h.make_node("QGemm", [n for n, _ in ins], ["y"], name="qgemm", domain="com.microsoft", transB=1,
                       alpha=0.5)  # fmt: skip
    inits = [_init(n, v) for n, v in ins if v is not None]
    out = _vi("y", T.UINT8 if quantized_output else T.FLOAT, [3, 5])
    return _qmodel([node], [_vi("a", T.UINT8, [3, 12])], [out], inits, contrib=True)


def qdq_uint8_pad_split_resize_concat():
    """UINT8 tensors moved by Pad (zero point as pad value), Split, nearest Resize and Concat."""
    nodes = [
        h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant_move"),
        h.make_node("Pad", ["q", "pads", "z"], ["p"], name="pad_u8", mode="constant"),
        h.make_node("Split", ["p", "split"], ["p1", "p2"], name="split_u8", axis=1),
        h.make_node("Resize", ["p1", "", "scales"], ["r"], name="resize_u8", mode="nearest"),
        h.make_node("Resize", ["p2", "", "scales"], ["r2"], name="resize2_u8", mode="nearest"),
        h.make_node("Concat", ["r", "r2"], ["c"], name="concat_u8", axis=1),
        h.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], name="dequant_move"),
    ]
    inits = [_init("s", np.float32(0.05)), _init("z", np.uint8(131)),
             _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), _init("split", np.array([1, 1], np.int64)),
             _init("scales", np.array([1, 1, 2, 2], np.float32))]  # fmt: skip
    return _qmodel(nodes, [_vi("x", T.FLOAT, [1, 2, 4, 6])], [_vi("y", T.FLOAT, [1, 2, 12, 16])], inits)


def add_quantized_scalar():
    """ORT's QDQ format quantizes the constant 3.0 of HardSwish-style ``x + 3`` as a 0-d Q -> DQ pair
    (UINT8, zero point 0): dequantize_bias folds it to the float scalar (a 0-d value: this crashed)."""
    nodes = [
        h.make_node("QuantizeLinear", ["three", "s", "z"], ["three_q"], name="q_three"),
        h.make_node("DequantizeLinear", ["three_q", "s", "z"], ["three_dq"], name="dq_three"),
        h.make_node("Add", ["x", "three_dq"], ["y"], name="add_three"),
    ]
    inits = [_init("three", np.float32(3.0)), _init("s", np.float32(3.0 / 255)), _init("z", np.uint8(0))]
    return _qmodel(nodes, [_vi("x", T.FLOAT, [2, 5])], [_vi("y", T.FLOAT, [2, 5])], inits)


def _u8_edges(names, shape, dtype=np.uint8, seed=25):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    full = {n: rng.integers(info.min, info.max + 1, shape).astype(dtype) for n in names}
    return lambda: [full, {n: np.full(shape, info.max, dtype) for n in names},
                    {n: np.full(shape, info.min, dtype) for n in names}]  # fmt: skip


# --- max_roi_pool ---------------------------------------------------------------------------


def max_roi_pool():
    """RoI corners computed at run time (batch ids constant), spatial_scale 0.5: corners land on ties."""
    nodes = [
        h.make_node("Add", ["boxes", "offset"], ["corners"], name="shift_rois"),
        h.make_node("Concat", ["batch_ids", "corners"], ["rois"], name="rois", axis=1),
        h.make_node(
            "MaxRoiPool", ["x", "rois"], ["y"], name="roi_pool", pooled_shape=[3, 2], spatial_scale=0.5
        ),
    ]
    ins = [_vi("x", T.FLOAT, [2, 3, 9, 11]), _vi("boxes", T.FLOAT, [6, 4])]
    inits = [_init("offset", np.array([0.5, 0.5, 1.0, 1.0], np.float32)),
             _init("batch_ids", np.array([[0], [1], [1], [0], [1], [0]], np.float32))]  # fmt: skip
    return _model(nodes, ins, [_vi("y", T.FLOAT, [6, 3, 3, 2])], inits, opset=13)


def _roi_edges():
    rng = np.random.default_rng(31)
    rows = []
    for t in range(4):
        boxes = rng.uniform(-6, 30, (6, 4)).astype(np.float32)
        if t == 1:
            boxes = np.round(boxes * 2) / 2  # half-integers: rounding ties after the scale
        if t == 2:
            boxes[:, 2:] = boxes[:, :2] - 4  # end before start: one-pixel RoIs
        rows.append({"x": _f32(2, 3, 9, 11, seed=32 + t), "boxes": boxes.astype(np.float32)})
    big = np.array([[40, 40, 60, 60]] * 6, np.float32)  # outside the image: every bin empty -> 0
    rows.append({"x": _f32(2, 3, 9, 11, seed=40), "boxes": big})
    rows.append({"x": np.full((2, 3, 9, 11), -np.inf, np.float32), "boxes": rows[0]["boxes"]})  # -> -FLT_MAX
    return rows


# --- tfidf_vectorizer -----------------------------------------------------------------------


def _tfidf(mode, shape, elem, weights=True, skip=2, grams=(1, 3)):
    """Pool: unigrams 2, 3, 5; bigrams (2, 3), (3, 2), (5, 5); trigram (2, 3, 2)."""
    attrs = dict(mode=mode, min_gram_length=grams[0], max_gram_length=grams[1], max_skip_count=skip,
                 ngram_counts=[0, 3, 9], ngram_indexes=[3, 0, 6, 1, 5, 2, 4],
                 pool_int64s=[2, 3, 5, 2, 3, 3, 2, 5, 5, 2, 3, 2])  # fmt: skip
    if weights:
        attrs["weights"] = [0.5, 1.5, 2.0, 0.25, 3.0, 1.25, 0.75]
    node = h.make_node("TfIdfVectorizer", ["tokens"], ["y"], name="tfidf", **attrs)
    out = [7] if len(shape) == 1 else [shape[0], 7]
    return _model([node], [_vi("tokens", elem, shape)], [_vi("y", T.FLOAT, out)], opset=13)


def _token_edges(shape, dtype):
    rng = np.random.default_rng(36)
    return lambda: [{"tokens": rng.integers(1, 6, shape).astype(dtype)},  # many matches
                    {"tokens": np.tile(np.array([2, 3, 2, 3, 2, 5, 5, 5, 2], dtype), shape[:-1] + (1,))},
                    {"tokens": np.full(shape, 9, dtype)}]  # no match at all  # fmt: skip


# --- upsample_to_resize ---------------------------------------------------------------------


def _upsample(opset: int, mode: str):
    nodes = [h.make_node("Relu", ["x"], ["r"], name="relu"),
             h.make_node("Upsample", ["r", "scales"], ["y"], name="upsample", mode=mode)]  # fmt: skip
    graph = h.make_graph(nodes, "g", [_vi("x", T.FLOAT, [1, 2, 5, 6])], [_vi("y", T.FLOAT, [1, 2, 10, 9])],
                         [_init("scales", np.array([1, 1, 2, 1.5], np.float32))])  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 7
    return model  # opset >= 10: not valid ONNX (onnx.checker: Upsample deprecated); opset 9: valid


CASES: list[Case] = [
    Case("reduce_axes_computed", reduce_axes_computed, "reduce", "fold_constants"),
    Case("cumsum_axis_from_shape", cumsum_axis_from_shape, "cumsum", "fold_constants"),
    Case("double_compute", double_compute, "mul_double", "double_to_float",
         lambda: [{"x": np.full((4, 6), 1e4, np.float32)}, {"x": -_f32(4, 6, seed=11)}]),
    Case("conv_int32_bias", conv_int32_bias, "dq_bias", "dequantize_bias"),
    Case("gemm_fake_quant_bias", gemm_fake_quant_bias, "dq_bias", "dequantize_bias"),
    Case("sequence_concat", sequence_concat, "concat_seq", "sequence_to_concat"),
    Case("sequence_stack", sequence_stack, "concat_seq", "sequence_to_concat"),
    Case("conv_integer", conv_integer, "conv_int", "convinteger_to_float", _uint8_edges("x", (1, 3, 5, 5))),
    Case("matmul_integer", matmul_integer, "matmul_int", "matmulinteger_to_float", _uint8_edges("a", (3, 16))),
    Case("resize_computed_sizes", resize_computed_sizes, "resize", "resize_constant_scales",
         lambda: [{"x": _f32(3, 3, 8, 8, seed=12)}]),
    Case("scatternd_add", scatternd_add, "scatter_add", "scatternd_reduction",
         lambda: [{"x": np.zeros((3, 4), np.float32), "u": np.array([1e30, -1e30, 0.5], np.float32)}]),
    Case("topk_large", topk_large, "topk", "topk_split", _topk_edges),
    Case("if_constant_condition", if_constant_condition, "else_seq", "if_constant_branch"),
    Case("function_with_matmulinteger", function_with_matmulinteger, "fn_mmi", "inline_local_functions",
         _uint8_edges("a", (4, 12))),
    Case("layernorm_decomposed", layernorm_decomposed, "ln_mean", "layernorm_fusion", _ln_edges),
    Case("pow_square", pow_square, "square", "pow_square_to_mul", _pow_edges),
    Case("det_plugin", det_op, "det", "plugin_mapping", plugins={"Det": ("DetPlugin_TRT", "1")}),
    Case("qlinear_conv_uint8", qlinear_conv_uint8, "qconv", "qlinear_conv",
         _full_range("x", (1, 3, 6, 6), np.uint8, 26)),
    Case("qlinear_conv_int8_symmetric", qlinear_conv_int8_symmetric, "qconv_sym", "qlinear_conv",
         _full_range("x", (1, 4, 7, 7), np.int8, 27)),
    Case("qlinear_matmul_per_column", qlinear_matmul_per_column, "qmatmul", "qlinear_matmul",
         _full_range("a", (3, 16), np.uint8, 28)),
    Case("qdq_uint8_through_maxpool", qdq_uint8_through_maxpool, "quant", "qdq_to_float", _qdq_edges),
    Case("dynamic_quantize", dynamic_quantize, "dql", "dynamic_quantize_linear", _dql_edges),
    Case("dynamic_conv_integer", dynamic_conv_integer, "convint_dynamic", "convinteger_to_float",
         lambda: [{"x": _f32(1, 32, 5, 5, seed=40, scale=50.0)}, {"x": np.zeros((1, 32, 5, 5), np.float32)}]),
    Case("dynamic_matmul_integer", dynamic_matmul_integer, "mmi_dynamic", "matmulinteger_to_float",
         lambda: [{"x": _f32(4, 300, seed=38, scale=100.0)}, {"x": np.zeros((4, 300), np.float32)}]),
    Case("qlinear_sigmoid", qlinear_sigmoid, "qsigmoid", "qlinear_lookup", _u8_edges(["x"], (1, 3, 4, 4))),
    Case("qlinear_leaky_relu", qlinear_leaky_relu, "qleaky", "qlinear_lookup",
         _u8_edges(["x"], (1, 3, 4, 4), np.int8)),
    Case("qlinear_add_broadcast", qlinear_add_broadcast, "qadd", "qlinear_lookup",
         _u8_edges(["x"], (1, 3, 4, 4), np.int8)),
    Case("qlinear_mul", qlinear_mul, "qmul", "qlinear_lookup", _u8_edges(["x", "x2"], (1, 3, 4, 4))),
    Case("qlinear_average_pool", qlinear_average_pool, "qavgpool", "qlinear_pool",
         _u8_edges(["x"], (1, 3, 7, 7), np.int8)),
    Case("qlinear_global_average_pool", qlinear_global_average_pool, "qgap", "qlinear_pool",
         _u8_edges(["x"], (1, 3, 5, 4))),
    Case("qlinear_concat", qlinear_concat, "qconcat", "qlinear_concat", _u8_edges(["a", "b", "c"], (1, 3, 4, 4))),
    Case("qlinear_softmax_uint8", qlinear_softmax, "qsoftmax", "qlinear_softmax", _softmax_edges(np.uint8)),
    Case("qlinear_softmax_int8_opset11", lambda: qlinear_softmax(np.int8, 11), "qsoftmax", "qlinear_softmax",
         _softmax_edges(np.int8)),
    Case("qgemm_quantized_output", qgemm, "qgemm", "qgemm", _full_range("a", (3, 12), np.uint8, 34)),
    Case("qgemm_float_output", lambda: qgemm(False), "qgemm", "qgemm", _full_range("a", (3, 12), np.uint8, 35)),
    Case("qdq_uint8_pad_split_resize_concat", qdq_uint8_pad_split_resize_concat, "pad_u8", "qdq_to_float",
         _qdq_edges),
    Case("add_quantized_scalar", add_quantized_scalar, "dq_three", "dequantize_bias"),
    Case("max_roi_pool", max_roi_pool, "roi_pool", "max_roi_pool", _roi_edges),
    Case("tfidf_weighted_skips", lambda: _tfidf("TFIDF", [3, 9], T.INT64), "tfidf", "tfidf_vectorizer",
         _token_edges((3, 9), np.int64)),
    Case("idf_1d_int32", lambda: _tfidf("IDF", [9], T.INT32, skip=1, grams=(2, 3)), "tfidf", "tfidf_vectorizer",
         _token_edges((9,), np.int32)),
    Case("upsample_linear_opset13", lambda: _upsample(13, "linear"), "upsample", "upsample_to_resize",
         lambda: [{"x": _f32(1, 2, 5, 6, seed=29, scale=1e3)}], reference=lambda: _upsample(9, "linear")),
    Case("upsample_nearest_opset11", lambda: _upsample(11, "nearest"), "upsample", "upsample_to_resize",
         reference=lambda: _upsample(9, "nearest")),
]  # fmt: skip
