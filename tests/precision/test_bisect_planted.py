"""Tiny ONNX models with a planted precision culprit, shared by the bisect and pins tests.

Each fixture returns ``(model, batches, amax)``: the model (every node named), a few batches of
real-valued data, and per-tensor amax computed honestly as max |x| over those batches (minmax
calibration) unless the model ruins one on purpose. Test modules import the fixtures from here;
the sanity tests at the bottom pin down what makes each culprit a culprit.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtq.runtime.onnxruntime import OnnxRuntimeRunner


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "planted", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _batches(rng: np.random.Generator, n: int, width: int, count: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"x": rng.normal(size=(n, width)).astype(np.float32)} for _ in range(count)]


def minmax_amax(model: onnx.ModelProto, batches) -> dict[str, float]:
    """max |x| of every float tensor over ``batches`` (graph inputs included)."""
    amax: dict[str, float] = {}
    with OnnxRuntimeRunner(model, mark="all") as backend:
        names = backend.marked
        for feeds in batches:
            values = dict(backend.run(feeds, names))
            values.update(feeds)
            for name, value in values.items():
                amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()))
    return amax


def _vi(name: str, width: int):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width])


def _weights(rng: np.random.Generator, sizes: list[int]) -> list[np.ndarray]:
    return [
        (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(sizes, sizes[1:], strict=False)
    ]


def make_overflow_output():
    """A 4-layer MLP whose regression output ``y`` reaches ~1.6e5 (beyond FP16's 65504).

    Culprit: ``head`` (the MatMul producing ``y``); every other layer is harmless in FP16.
    """
    rng = np.random.default_rng(0)
    w1, w2, w3 = _weights(rng, [16, 32, 32, 32])
    w4 = (_weights(rng, [32, 8])[0] * 1e5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Tanh", ["h2"], ["r2"], name="act2"),
        helper.make_node("MatMul", ["r2", "w3"], ["h3"], name="fc3"),
        helper.make_node("Relu", ["h3"], ["r3"], name="act3"),
        helper.make_node("MatMul", ["r3", "w4"], ["y"], name="head"),
    ]
    model = _model(nodes, [_vi("x", 16)], [_vi("y", 8)], {"w1": w1, "w2": w2, "w3": w3, "w4": w4})
    batches = _batches(rng, 16, 16)
    return model, batches, minmax_amax(model, batches)


def make_overflow_inner():
    """An internal tensor ``big`` (~1e5) between layers, centred by its mean and scaled back.

    ``big`` overflows FP16 wherever it is rounded: at its producer ``expand`` (an FP16 layer rounds
    its output) and at each reader (an FP16 layer rounds its FP32 inputs): ``norm`` (ReduceMean)
    and the fused ``centre``+``rescale`` layer. The minimal fix is exactly those three layers.
    """
    rng = np.random.default_rng(1)
    w1, w2 = _weights(rng, [16, 32, 32])
    w_big = (_weights(rng, [32, 32])[0] * 5e4).astype(np.float32)
    w_out = _weights(rng, [32, 4])[0]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
        helper.make_node("MatMul", ["r1", "w_big"], ["big"], name="expand"),
        helper.make_node("ReduceMean", ["big"], ["mean"], name="norm", axes=[1], keepdims=1),
        helper.make_node("Sub", ["big", "mean"], ["centred"], name="centre"),
        helper.make_node("Div", ["centred", "scale"], ["scaled"], name="rescale"),
        helper.make_node("MatMul", ["scaled", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["r2"], name="act2"),
        helper.make_node("MatMul", ["r2", "w_out"], ["y"], name="head"),
    ]
    inits = {"w1": w1, "w_big": w_big, "w2": w2, "w_out": w_out, "scale": np.array(1e5, np.float32)}
    model = _model(nodes, [_vi("x", 16)], [_vi("y", 4)], inits)
    batches = _batches(rng, 16, 16)
    return model, batches, minmax_amax(model, batches)


def make_outlier_scale():
    """An MLP whose tensor ``r2`` got an INT8 amax 300x too large, as a few calibration outliers
    would give it under minmax calibration: every ordinary value of ``r2`` quantizes to 0.

    Under explicit placement ``r2`` is quantized only where ``fc3`` reads it, so the culprit is
    exactly ``fc3``.
    """
    rng = np.random.default_rng(2)
    w1, w2, w3, w4 = _weights(rng, [16, 32, 32, 32, 8])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["r2"], name="act2"),
        helper.make_node("MatMul", ["r2", "w3"], ["h3"], name="fc3"),
        helper.make_node("Relu", ["h3"], ["r3"], name="act3"),
        helper.make_node("MatMul", ["r3", "w4"], ["y"], name="head"),
    ]
    model = _model(nodes, [_vi("x", 16)], [_vi("y", 8)], {"w1": w1, "w2": w2, "w3": w3, "w4": w4})
    batches = _batches(rng, 16, 16)
    amax = minmax_amax(model, batches)
    amax["r2"] *= 300.0
    return model, batches, amax


def make_concat_ranges():
    """A detection-style head: ``boxes`` (range ~640) and ``scores`` (sigmoid, 0..1) concatenated
    into ``det``, then sliced again for two consumers, as post-processing does.

    Under implicit INT8 placement every edge into a layer carries its tensor's scale, so whatever
    reads ``det`` reads the scores on the 640/127 grid: they all become 0 or 5. The box slice does
    not care; the culprit is exactly ``take_scores``, the layer reading the scores out of ``det``.
    """
    rng = np.random.default_rng(3)
    w1 = _weights(rng, [16, 32])[0]
    wb = (_weights(rng, [32, 4])[0] * 200.0).astype(np.float32)
    ws = _weights(rng, [32, 4])[0]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="act1"),
        helper.make_node("MatMul", ["r1", "wb"], ["boxes"], name="box_head"),
        helper.make_node("MatMul", ["r1", "ws"], ["logits"], name="score_head"),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="score_act"),
        helper.make_node("Concat", ["boxes", "scores"], ["det"], name="concat", axis=1),
        helper.make_node("Slice", ["det", "s0", "s4", "ax1"], ["out_boxes"], name="take_boxes"),
        helper.make_node("Slice", ["det", "s4", "s8", "ax1"], ["out_scores"], name="take_scores"),
    ]
    inits = {
        "w1": w1,
        "wb": wb,
        "ws": ws,
        "s0": np.array([0], np.int64),
        "s4": np.array([4], np.int64),
        "s8": np.array([8], np.int64),
        "ax1": np.array([1], np.int64),
    }
    model = _model(nodes, [_vi("x", 16)], [_vi("out_boxes", 4), _vi("out_scores", 4)], inits)
    batches = _batches(rng, 16, 16)
    return model, batches, minmax_amax(model, batches)


@pytest.fixture
def overflow_output_model():
    return make_overflow_output()


@pytest.fixture
def overflow_inner_model():
    return make_overflow_inner()


@pytest.fixture
def outlier_scale_model():
    return make_outlier_scale()


@pytest.fixture
def concat_ranges_model():
    return make_concat_ranges()


# -- what makes each culprit a culprit (checked on FP32 values, independently of the emulation) --


def test_overflow_models_exceed_fp16_range_only_where_planted(overflow_output_model, overflow_inner_model):
    _, _, amax = overflow_output_model
    assert amax["y"] > 65504 and max(v for k, v in amax.items() if k != "y") < 65504
    _, _, amax = overflow_inner_model
    # "centred" (big - mean) is also large, but stays inside the fused Sub+Div kernel (FP32 there)
    assert amax["big"] > 65504 and max(v for k, v in amax.items() if k not in ("big", "centred")) < 65504


def test_outlier_scale_crushes_ordinary_values_to_zero(outlier_scale_model):
    model, batches, amax = outlier_scale_model
    with OnnxRuntimeRunner(model, mark=["r2"]) as backend:
        r2 = np.concatenate([backend.run(b, ["r2"])["r2"] for b in batches])
    step = amax["r2"] / 127
    assert np.mean(np.abs(r2) < step / 2) > 0.95  # they round to 0 on the ruined grid


def test_concat_mixes_ranges_two_orders_apart(concat_ranges_model):
    _, _, amax = concat_ranges_model
    assert amax["det"] / 127 > 2 * amax["scores"]  # one INT8 step is larger than any score
