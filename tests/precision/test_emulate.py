"""Emulation rules: INT8 of a Conv equals an independent numpy int8 computation; FP16 rounding
happens at layer boundaries only; pins stay FP32; BatchNorm is folded before anything is rounded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from precision_tiny_models import make_model, run_ort, vi

from trtq._core.errors import InputError
from trtq.precision.emulate import EmulationConfig, emulate, plan_emulation
from trtq.precision.emulation_fusion import find_layers
from trtq.precision.fold import fold_model
from trtq.precision.fp16_range import fp16_range_check


def _conv2d_int(x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Valid 2-D convolution, stride 1, integer arithmetic (int64 accumulators)."""
    _, cin, h, w = x_q.shape
    cout, _, k, _ = w_q.shape
    out = np.zeros((1, cout, h - k + 1, w - k + 1), np.int64)
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            patch = x_q[0, :, i : i + k, j : j + k].astype(np.int64)
            out[0, :, i, j] = np.tensordot(w_q.astype(np.int64), patch, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_int8_conv_equals_independent_numpy_int8(conv_relu, rng):
    x = (rng.rand(1, 3, 8, 8).astype(np.float32) * 4 - 1).astype(np.float32)
    amax_x = 2.5  # deliberately below max|x| so that saturation is exercised too
    model = emulate(conv_relu, EmulationConfig("int8"), {"x": amax_x, "c": 50.0, "y": 50.0})
    got = run_ort(model, {"x": x})["y"]

    # Independent computation: TensorRT INT8 conv = int32 accumulation of int8 x int8, then
    # rescale by s_x * s_w[c], add the FP32 bias, ReLU.
    w = onnx.numpy_helper.to_array(next(i for i in conv_relu.graph.initializer if i.name == "w"))
    b = onnx.numpy_helper.to_array(next(i for i in conv_relu.graph.initializer if i.name == "b"))
    s_x = np.float32(amax_x) / np.float32(127)
    x_q = np.clip(np.rint(x / s_x), -128, 127).astype(np.int8)
    s_w = np.abs(w).max(axis=(1, 2, 3)) / 127.0
    w_q = np.clip(np.rint(w / s_w[:, None, None, None]), -127, 127).astype(np.int8)
    acc = _conv2d_int(x_q, w_q)
    want = np.maximum(acc * (s_x * s_w)[None, :, None, None] + b[None, :, None, None], 0)
    assert np.abs(x).max() > amax_x  # saturation happened
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and it is not the FP32 result: quantization changed the numbers
    ref = run_ort(conv_relu, {"x": x})["y"]
    assert np.abs(ref - got).max() > 1e-3


def test_fp16_rounds_layer_boundaries_only(conv_relu, rng):
    x = rng.randn(1, 3, 8, 8).astype(np.float32)
    model = emulate(conv_relu, EmulationConfig("fp16"), None)
    out = run_ort(model, {"x": x}, ["c", "y"])
    half = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    # Conv + Relu is one fused layer: "c" is internal (FP32 accumulate of FP16-rounded x and w)
    # and is NOT rounded; "y" is the layer's output and IS rounded through half.
    assert not np.array_equal(out["c"], half(out["c"]))
    assert np.array_equal(out["y"], half(out["y"]))
    np.testing.assert_array_equal(out["y"], half(np.maximum(out["c"], 0)))
    # the internal value was computed from half-rounded input and weights
    model_hw = emulate(conv_relu, EmulationConfig("fp16"), None)
    inits = {i.name for i in model_hw.graph.initializer}
    assert "w__trtq_fp16" in inits and "w" not in inits
    ref = run_ort(conv_relu, {"x": half(x)}, ["c"])["c"]  # FP32 weights: differs slightly
    assert 0 < np.abs(ref - out["c"]).max() < 1e-2


def test_fp16_overflow_becomes_inf_at_a_boundary():
    # x * 1000 -> GlobalAveragePool: the Mul output is a boundary (read by a pooling layer)
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"], name="scale"),
        helper.make_node("GlobalAveragePool", ["m"], ["y"], name="pool"),
    ]
    model = make_model(
        nodes, [vi("x", [1, 2, 2, 2])], [vi("y", [1, 2, 1, 1])], {"k": np.array(1000.0, np.float32)}
    )
    x = np.full((1, 2, 2, 2), 100.0, np.float32)  # 1e5 > 65504
    out = run_ort(emulate(model, EmulationConfig("fp16")), {"x": x}, ["m", "y"])
    assert np.isinf(out["m"]).all() and np.isinf(out["y"]).all()


def _conv_bn_model(var_max: float) -> onnx.ModelProto:
    rs = np.random.RandomState(0)
    var = np.array([1.0, var_max, 0.5, 2.0], np.float32)
    inits = {
        "w": rs.randn(4, 3, 3, 3).astype(np.float32),
        "gamma": rs.rand(4).astype(np.float32) + 0.5,
        "beta": rs.randn(4).astype(np.float32),
        "mean": rs.randn(4).astype(np.float32) * 100,
        "var": var,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])], inits)


def test_batchnorm_statistics_are_folded_not_reported_as_fp16_overflow(rng):
    model = _conv_bn_model(9.8e7)  # PP-OCRv4 det's largest running_var
    naive = fp16_range_check(model, fold=False)
    assert [(i.kind, i.tensor) for i in naive] == [("initializer", "var")]
    assert fp16_range_check(model) == []
    folded = fold_model(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
    x = rng.randn(1, 3, 8, 8).astype(np.float32)
    ref = run_ort(model, {"x": x})["y"]
    np.testing.assert_allclose(run_ort(folded, {"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    out = run_ort(emulate(model, EmulationConfig("fp16")), {"x": x})["y"]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_pinned_layer_stays_fp32(two_conv, rng):
    x = rng.randn(1, 3, 6, 6).astype(np.float32)
    ref = run_ort(two_conv, {"x": x}, ["c1", "r1", "y"])
    pinned = emulate(two_conv, EmulationConfig("fp16", pins=frozenset({"conv1"})))
    out = run_ort(pinned, {"x": x}, ["c1", "r1", "y"])
    # conv1 in FP32 from the FP32 input, unrounded: identical to the reference. relu1 is no longer
    # fused with it (no fusion across precisions) and runs in FP16 on its own: rounded.
    np.testing.assert_array_equal(out["c1"], ref["c1"])
    np.testing.assert_array_equal(out["r1"], ref["r1"].astype(np.float16).astype(np.float32))
    assert not np.array_equal(out["y"], ref["y"])
    both = run_ort(
        emulate(two_conv, EmulationConfig("fp16", pins=frozenset({"conv1", "relu1"}))), {"x": x}, ["r1"]
    )
    np.testing.assert_array_equal(both["r1"], ref["r1"])
    unpinned = run_ort(emulate(two_conv, EmulationConfig("fp16")), {"x": x}, ["r1"])
    assert not np.array_equal(unpinned["r1"], ref["r1"])
    with pytest.raises(InputError, match="not in the model: nope"):
        emulate(two_conv, EmulationConfig("fp16", pins=frozenset({"nope"})))


def test_fusion_rules_on_a_residual_block(two_conv):
    layers = find_layers(fold_model(two_conv)).layers
    ops = [[two_conv.graph.node[i].name for i in layer.nodes] for layer in layers]
    # conv1+relu1 fuse; conv2 absorbs the residual Add and the final Relu; r1 is the residual input
    assert ops == [["conv1", "relu1"], ["conv2", "add", "relu2"]]
    assert layers[1].inputs == ("r1",)
    # a pin breaks the fusion
    layers = find_layers(fold_model(two_conv), pins={"conv2"}).layers
    assert [[two_conv.graph.node[i].name for i in la.nodes] for la in layers] == [
        ["conv1", "relu1"],
        ["conv2"],
        ["add", "relu2"],
    ]


def test_hard_swish_fuses_into_the_conv():
    rs = np.random.RandomState(0)
    inits = {"w": rs.randn(2, 2, 1, 1).astype(np.float32), "three": np.array(3.0, np.float32),
             "six": np.array(6.0, np.float32), "zero": np.array(0.0, np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Add", ["c", "three"], ["a"], name="add3"),
        helper.make_node("Clip", ["a", "zero", "six"], ["cl"], name="clip"),
        helper.make_node("Div", ["cl", "six"], ["d"], name="div6"),
        helper.make_node("Mul", ["c", "d"], ["y"], name="mul"),
    ]
    model = make_model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 4, 4])], inits)
    layers = find_layers(model).layers
    assert len(layers) == 1 and layers[0].outputs == ("y",)


def _concat_model() -> onnx.ModelProto:
    rs = np.random.RandomState(0)
    inits = {"w1": rs.randn(2, 2, 1, 1).astype(np.float32), "w2": rs.randn(2, 4, 1, 1).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["boxes"], name="conv_boxes"),
        helper.make_node("Sigmoid", ["x"], ["scores"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["y"], name="head"),
    ]
    return make_model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 3, 3])], inits)


def test_explicit_and_implicit_int8_placement():
    model = _concat_model()
    amax = {"x": 1.0, "boxes": 640.0, "scores": 1.0, "cat": 640.0, "y": 10.0}

    def quantized(placement: str) -> set[str]:
        m = emulate(model, EmulationConfig("int8", placement=placement), amax)
        return {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}

    # explicit (TensorRT 11 Q/DQ rules): only the inputs of the two Convs
    assert quantized("explicit") == {"x", "cat"}
    # implicit (TensorRT 10 calibrator, pessimistic): every layer-boundary tensor where it is read,
    # including the Concat inputs whose ranges (640 vs 1) differ wildly
    assert quantized("implicit") == {"x", "boxes", "scores", "cat"}


def test_int8_without_ranges_is_an_input_error(conv_relu):
    with pytest.raises(InputError, match="calibration cache"):
        emulate(conv_relu, EmulationConfig("int8"))
    with pytest.raises(InputError, match="unknown precision 'int4'"):
        EmulationConfig("int4")


def test_missing_range_falls_back_to_float(two_conv):
    plan = plan_emulation(two_conv, EmulationConfig("int8"), {"x": 1.0})
    assert plan.missing_amax == ("r1",)
    conv2 = next(lp for lp in plan.layers if lp.layer.anchor == 2)
    assert not conv2.changed  # conv2's input has no scale: it stays in FP32, weights untouched
