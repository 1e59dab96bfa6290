"""End to end: models quantized by ONNX Runtime's ``quantize_static(quant_format=QOperator)``,
fixed by ``surgery fix``, give bit-identical outputs and leave no QOperator op for TensorRT's parser."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from trtq.surgery.check import check_model
from trtq.surgery.cli import main

QOPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
        "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat"}  # fmt: skip
REAL_QOPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSoftmax"}


# reduce_range=True (7-bit weights) everywhere: ORT's x86 kernels without VNNI saturate int16 pair
# sums of 8-bit products, and the quantized model would then not compute the ONNX formula itself.


class _Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.it = iter(batches)

    def get_next(self):
        return next(self.it, None)


def _small_cnn(path):
    """Conv/Relu/MaxPool/Conv/Sigmoid/Mul/Add/LeakyRelu/AveragePool x2/Concat/GlobalAveragePool/
    Flatten/MatMul: every op ORT's QOperator quantizer turns into a QLinear* op on a plain CNN."""
    rng = np.random.default_rng(0)
    inits = []

    def w(name, *shape, scale=0.3):
        inits.append(nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    nodes = [
        h.make_node("Conv", ["x", w("w1", 8, 3, 3, 3), w("b1", 8, scale=0.1)], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node(
            "Conv", ["p1", w("w2", 8, 8, 3, 3, scale=0.2), w("b2", 8, scale=0.1)], ["c2"], pads=[1, 1, 1, 1]
        ),
        h.make_node("Sigmoid", ["c2"], ["s2"]),
        h.make_node("Mul", ["s2", "p1"], ["m2"]),
        h.make_node("Add", ["m2", "p1"], ["a2"]),
        h.make_node("LeakyRelu", ["a2"], ["l2"], alpha=0.1),
        h.make_node("AveragePool", ["l2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("AveragePool", ["a2"], ["ap2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]),
        h.make_node("Concat", ["ap", "ap2"], ["cc"], axis=1),
        h.make_node("GlobalAveragePool", ["cc"], ["g"]),
        h.make_node("Flatten", ["g"], ["f"]),
        h.make_node("MatMul", ["f", w("wm", 16, 4)], ["y"]),
    ]
    graph = h.make_graph(nodes, "cnn", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits)  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _moving_cnn(path):
    """Conv, then ops ORT runs directly on 8-bit tensors (Pad, Split, nearest Resize, Transpose,
    Flatten), an Add, GlobalAveragePool and a Gemm head (QGemm)."""
    rng = np.random.default_rng(2)
    inits = []

    def c(name, value, dtype=np.float32):
        inits.append(nh.from_array(np.asarray(value).astype(dtype), name))
        return name

    nodes = [
        h.make_node("Conv", ["x", c("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), c("b1", rng.standard_normal(8) * 0.1)],
                    ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Pad", ["c1", c("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)], ["pd"], mode="constant"),
        h.make_node("Split", ["pd", c("split", [4, 4], np.int64)], ["s1", "s2"], axis=1),
        h.make_node("Add", ["s1", "s2"], ["a"]),
        h.make_node("Resize", ["a", "", c("scales", [1, 1, 2, 2])], ["rs"], mode="nearest"),
        h.make_node("Transpose", ["rs"], ["tr"], perm=[0, 1, 3, 2]),
        h.make_node("GlobalAveragePool", ["tr"], ["g"]),
        h.make_node("Flatten", ["g"], ["f"]),
        h.make_node("Gemm", ["f", c("wg", rng.standard_normal((3, 4)) * 0.3), c("bg", rng.standard_normal(3) * 0.1)],
                    ["y"], transB=1),
    ]  # fmt: skip
    graph = h.make_graph(nodes, "moving", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 3])], inits)  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


MODELS = {
    "cnn": (_small_cnn, QOPS),
    "moving": (_moving_cnn, {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"}),
}


def _session(path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _fix(src, out, shape):
    res = CliRunner().invoke(main, ["fix", str(src), "-o", str(out), "--shape", shape, "--json", "-",
                                    "--allow-unfixed"])  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(
    "activations,symmetric",
    [(QuantType.QInt8, False), (QuantType.QInt8, True), (QuantType.QUInt8, False)],
    ids=["int8", "int8-symmetric", "uint8"],
)
def test_quantized_cnn_is_fixed_exactly(tmp_path, activations, symmetric, model):
    build, qops = MODELS[model]
    build(tmp_path / "f.onnx")
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), _Reader(calib),
                    quant_format=QuantFormat.QOperator, activation_type=activations, reduce_range=True,
                    extra_options={"ActivationSymmetric": symmetric})  # fmt: skip
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    emitted = {n.op_type for n in quantized.graph.node}
    assert qops <= emitted, qops - emitted  # ORT really emits every op the rules are for
    assert {f.op_type for f in check_model(quantized).errors} >= qops

    summary = _fix(tmp_path / "q.onnx", tmp_path / "fixed.onnx", "x:1x3x16x16")
    assert summary["remaining"] == [] and summary["verify"]["ok"]
    fixed = onnx.load(str(tmp_path / "fixed.onnx"))
    assert not {n.op_type for n in fixed.graph.node} & (qops | {"QGemm"})
    assert not check_model(fixed).errors
    if symmetric:  # zero points 0: the convolutions keep INT8 Q/DQ that TensorRT runs in INT8
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in fixed.graph.node}

    a, b = _session(tmp_path / "q.onnx"), _session(tmp_path / "fixed.onnx")
    for scale in (0.1, 1.0, 10.0):  # also far outside the calibration range: saturation everywhere
        x = {"x": (rng.standard_normal((1, 3, 16, 16)) * scale).astype(np.float32)}
        assert np.array_equal(a.run(None, x)[0], b.run(None, x)[0])


def test_quantize_dynamic_model_is_fixed_exactly(tmp_path):
    """``quantize_dynamic`` (transformer style): DynamicQuantizeLinear + MatMulInteger with the run-time
    zero point, K = 64 and 32, then Mul by the scales."""
    rng = np.random.default_rng(3)
    inits = [nh.from_array((rng.standard_normal((64, 32)) * 0.1).astype(np.float32), "w1"),
             nh.from_array((rng.standard_normal((32, 16)) * 0.1).astype(np.float32), "w2")]  # fmt: skip
    nodes = [h.make_node("MatMul", ["x", "w1"], ["m1"]), h.make_node("Relu", ["m1"], ["r1"]),
             h.make_node("MatMul", ["r1", "w2"], ["y"])]  # fmt: skip
    graph = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, [2, 10, 64])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 10, 16])], inits)  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "f.onnx"))
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8,
                     reduce_range=True)  # fmt: skip
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {
        n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node
    }
    summary = _fix(tmp_path / "q.onnx", tmp_path / "fixed.onnx", "x:2x10x64")
    assert summary["remaining"] == [] and summary["verify"]["ok"]
    assert summary["changes"]["matmulinteger_to_float"]["count"] == 2
    a, b = _session(tmp_path / "q.onnx"), _session(tmp_path / "fixed.onnx")
    for scale in (0.01, 1.0, 100.0):
        x = {"x": (rng.standard_normal((2, 10, 64)) * scale).astype(np.float32)}
        assert np.array_equal(a.run(None, x)[0], b.run(None, x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("key,size,convs", [("cls", (48, 192), 53), ("lcnet", (224, 224), 32)])
def test_real_model_quantized_by_ort_is_fixed_exactly(real_models, image_dir, tmp_path, key, size, convs):
    """PP-OCR's direction classifier (53 convolutions, 71 elementwise QLinear ops, a QLinearSoftmax)
    and PP-LCNet (32 convolutions, HardSwish kept in float between them), calibrated and checked
    on real photographs."""
    images = []
    for path in sorted(image_dir.iterdir())[:6]:
        img = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), size[::-1]).astype(np.float32) / 127.5 - 1.0
        images.append({"x": img.transpose(2, 0, 1)[None]})
    quantize_static(str(real_models[key]), str(tmp_path / "q.onnx"), _Reader(images[:3]),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    reduce_range=True)  # fmt: skip
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert REAL_QOPS <= {n.op_type for n in quantized.graph.node}
    summary = _fix(tmp_path / "q.onnx", tmp_path / "fixed.onnx", f"x:1x3x{size[0]}x{size[1]}")
    assert summary["changes"]["qlinear_conv"]["count"] == convs and summary["verify"]["ok"]
    assert summary["changes"]["qlinear_softmax"]["count"] == 1
    fixed = onnx.load(str(tmp_path / "fixed.onnx"))
    assert not {n.op_type for n in fixed.graph.node} & REAL_QOPS
    assert summary["remaining"] == [] and not check_model(fixed).errors
    a, b = _session(tmp_path / "q.onnx"), _session(tmp_path / "fixed.onnx")
    for x in images[3:]:  # held-out photographs
        assert np.array_equal(a.run(None, x)[0], b.run(None, x)[0])
