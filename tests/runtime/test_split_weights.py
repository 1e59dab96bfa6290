"""The ONNX Runtime backend hands large weights to the session as arrays beside the model
(:func:`trtq.runtime.onnxruntime.split_weights`): the session must compute exactly what a session
made from the whole serialised model computes, FP32 and in the INT8 emulation, on PP-OCRv4 rec
reading real text lines (scikit-image's page.png). rec keeps its weights in Constant nodes, which
are not split; folding (every build of the precision room) makes them initializers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from ocr_lines import page_batches  # tests/ is on sys.path (pytest's rootdir conftest)
from onnx import numpy_helper

from trtq._core.onnx_model import load_onnx
from trtq.precision.builds import PrecisionTools
from trtq.runtime.build import BuildSpec
from trtq.runtime.onnxruntime import SPLIT_BYTES, OnnxRuntimeRunner, mark_outputs, split_weights


def _whole_session(model: onnx.ModelProto, optimize: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def test_split_keeps_small_initializers_and_hands_over_the_large_ones_unchanged(vit_model):
    model = load_onnx(vit_model)
    before = model.SerializeToString()
    light, weights = split_weights(model)
    assert model.SerializeToString() == before  # the source is not touched
    by_name = {i.name: i for i in model.graph.initializer}
    large = {n for n, i in by_name.items() if i.ByteSize() >= SPLIT_BYTES}
    assert large and set(weights) == large
    for stub in light.graph.initializer:
        src = by_name[stub.name]
        assert (stub.data_type, list(stub.dims)) == (src.data_type, list(src.dims))
        if stub.name in weights:
            assert stub.data_location == onnx.TensorProto.EXTERNAL and not stub.raw_data
            np.testing.assert_array_equal(weights[stub.name], numpy_helper.to_array(src))
        else:
            assert stub == src
    assert [i.name for i in light.graph.initializer] == [i.name for i in model.graph.initializer]
    assert list(light.graph.node) == list(model.graph.node)
    assert light.ByteSize() < model.ByteSize() / 100  # ViT-S: 88 MB of weights


def test_a_split_session_computes_what_the_whole_model_computes_fp32_and_int8(real_models):
    tools = PrecisionTools()
    model = load_onnx(real_models["rec"])
    folded, _ = tools.prepared(model)
    assert len(split_weights(folded)[1]) >= 20  # the weights of 64 KB and more
    lines = page_batches(2)
    name = model.graph.input[0].name
    # FP32, ONNX Runtime's optimisations on, every float tensor fetchable (calibration's runner)
    with OnnxRuntimeRunner(folded, mark="all") as runner:
        whole = _whole_session(mark_outputs(folded, runner.marked), optimize=True)
        marked = runner.marked[::25]
        out = whole.get_outputs()[0].name
        for batch in lines:
            got = runner.run(batch, [out, *marked])
            want = dict(zip([out, *marked], whole.run([out, *marked], {name: batch[name]}), strict=True))
            for t, v in want.items():
                np.testing.assert_array_equal(got[t], v)
    # the INT8 emulation (node for node), as auto's check and bisect build it
    amax = {t: 4.0 for t in marked}
    with OnnxRuntimeRunner.build(model, BuildSpec("int8", amax=amax), tools) as runner:
        emulated = runner.model
        assert any(n.op_type == "QuantizeLinear" for n in emulated.graph.node)
        whole = _whole_session(emulated, optimize=False)
        for batch in lines:
            want = whole.run([out], {name: batch[name]})[0]
            np.testing.assert_array_equal(runner.run(batch, [out])[out], want)


def test_fp8_weights_stay_in_the_model_and_the_session_runs():
    """An FP8 Q/DQ export stores its weights as FLOAT8E4M3FN initializers, which numpy (and so
    ``OrtValue.ortvalue_from_numpy``) cannot hold: they stay in the model's bytes (this crashed
    ``precision compare model.fp8.onnx`` before), the float ones beside them are still split, and
    the outputs equal a session of the whole model."""
    from onnx import TensorProto, helper

    from trtq.precision import qdq

    rs = np.random.RandomState(0)
    k, n = 300, 256  # 76 800 FP8 bytes: above SPLIT_BYTES
    codes = qdq.round_fp8(rs.randn(k, n).astype(np.float32) * 40)
    inits = [
        qdq.fp8_tensor("w_fp8", codes),
        numpy_helper.from_array((rs.rand(n) * 0.01 + 0.001).astype(np.float32), "w_scale"),
        qdq.zero_point("w_zp", (n,), "fp8"),
        numpy_helper.from_array(rs.randn(n, n).astype(np.float32), "v"),  # a large FP32 weight
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_fp8", "w_scale", "w_zp"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "fp8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    light, weights = split_weights(model)
    assert set(weights) == {"v"}
    x = rs.randn(2, k).astype(np.float32)
    with OnnxRuntimeRunner(model, optimize=False) as runner:
        got = runner.run({"x": x}, ["y"])["y"]
    np.testing.assert_array_equal(got, _whole_session(model, optimize=False).run(["y"], {"x": x})[0])
