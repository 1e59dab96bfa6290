"""Tiny ONNX models and helpers for the precision tests, built with onnx.helper (no files, no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8


def make_model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "tiny", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu_model(
    cin: int = 3, cout: int = 4, k: int = 3, seed: int = 0, bias: bool = True
) -> onnx.ModelProto:
    """x -> Conv(+bias) -> Relu -> y (one fused TensorRT layer)."""
    rs = np.random.RandomState(seed)
    w = (rs.randn(cout, cin, k, k) * 0.3).astype(np.float32)
    w[1] *= 8.0  # channels of very different ranges: per-channel scales matter
    inits = {"w": w}
    conv_in = ["x", "w"]
    if bias:
        inits["b"] = rs.randn(cout).astype(np.float32)
        conv_in.append("b")
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return make_model(nodes, [vi("x", [1, cin, 8, 8])], [vi("y", [1, cout, 8 - k + 1, 8 - k + 1])], inits)


def two_conv_model(seed: int = 1, cin: int = 3, c: int = 4) -> onnx.ModelProto:
    """c1 = Conv(x); r1 = Relu(c1); c2 = Conv(r1); s = Add(c2, r1); y = Relu(s) (a residual block);
    ``cin`` input and ``c`` inner channels (FP8 leaves Convs of at most 16 channels in float)."""
    rs = np.random.RandomState(seed)
    inits = {
        "w1": (rs.randn(c, cin, 1, 1) * 0.5 * np.sqrt(3 / cin)).astype(np.float32),
        "b1": rs.randn(c).astype(np.float32) * 0.1,
        "w2": (rs.randn(c, c, 1, 1) * 0.5 * np.sqrt(4 / c)).astype(np.float32),
        "b2": rs.randn(c).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    return make_model(nodes, [vi("x", [1, cin, 6, 6])], [vi("y", [1, c, 6, 6])], inits)


#: Channels of a ``two_conv_model`` whose Convs both run in FP8 (more than 16 in and out).
WIDE = {"cin": 17, "c": 20}


def run_ort(model: onnx.ModelProto, feeds: dict, names=None) -> dict:
    """Run with ONNX Runtime, graph optimisations off, optionally fetching extra tensors."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    names = list(names) if names else [o.name for o in model.graph.output]
    with OnnxRuntimeRunner(model, mark=names, optimize=False, threads=1) as b:
        return b.run(feeds, names)


def minmax_amax(model: onnx.ModelProto, batches) -> dict[str, float]:
    """Max |x| per float tensor over FP32 runs: a simple calibration for tests."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    amax: dict[str, float] = {}
    with OnnxRuntimeRunner(model, mark="all", threads=1) as b:
        names = b.marked
        for feeds in batches:
            for k, v in b.run(feeds, names).items():
                amax[k] = max(amax.get(k, 0.0), float(np.abs(v).max()))
    return amax


def write_workspace(tmp_path, model: onnx.ModelProto, batches: list[dict[str, np.ndarray]]):
    """``model`` saved as m.onnx, ``batches`` as one file each in data/ (``.npy`` for one input,
    ``.npz`` for several) and their min/max TensorRT cache: ``(model path, data dir, cache path)``."""
    from trtq.calib.cache import CalibrationCache, write_cache

    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = tmp_path / "data"
    data.mkdir()
    for i, b in enumerate(batches):
        if len(b) == 1:
            np.save(data / f"s{i}.npy", next(iter(b.values())))
        else:
            np.savez(data / f"s{i}.npz", **b)
    cache = tmp_path / "calib.cache"
    write_cache(cache, CalibrationCache.from_amax(minmax_amax(model, batches)))
    return path, data, cache


def two_conv_workspace(tmp_path, cin: int = 3, c: int = 4):
    """``two_conv_model(cin=cin, c=c)`` with 4 random samples (:func:`write_workspace`):
    ``(tmp_path, model path, data dir, cache path)``."""
    rs = np.random.RandomState(0)
    batches = [{"x": rs.randn(1, cin, 6, 6).astype(np.float32)} for _ in range(4)]
    return (tmp_path, *write_workspace(tmp_path, two_conv_model(cin=cin, c=c), batches))
