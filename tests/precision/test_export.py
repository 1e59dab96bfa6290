"""Q/DQ export: TensorRT-friendly placement, zero-point 0, per-channel weights, checker-clean,
runs in ONNX Runtime with the same numbers as the INT8 emulation; pinned nodes stay FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from precision_tiny_models import conv_relu_model, make_model, minmax_amax, run_ort

from trtq._core.errors import InputError
from trtq.precision.emulate import EmulationConfig, emulate
from trtq.precision.export import export_qdq


def _dq_inputs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}


def test_qdq_export_structure_and_numbers(two_conv, rng):
    batches = [{"x": rng.randn(1, 3, 6, 6).astype(np.float32)} for _ in range(3)]
    amax = minmax_amax(two_conv, batches)
    q = export_qdq(two_conv, amax)
    onnx.checker.check_model(q, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dqs = _dq_inputs(q)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    for conv in convs:
        x_dq, w_dq = dqs[conv.input[0]], dqs[conv.input[1]]
        # weights: INT8 initializer, one scale per output channel (axis 0), zero-points 0
        assert inits[w_dq.input[0]].dtype == np.int8
        assert inits[w_dq.input[1]].shape == (4,)
        assert next(a.i for a in w_dq.attribute if a.name == "axis") == 0
        # activations: per-tensor scale = amax / 127 from the cache
        assert inits[x_dq.input[1]].shape == ()
        assert inits[x_dq.input[1]] == pytest.approx(
            amax[x_dq.input[0].rsplit("_DequantizeLinear", 1)[0]] / 127
        )
    assert all(
        not inits[n.input[2]].any()
        for n in q.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    )
    # the residual Add's outside input (r1) is quantized; no layer output is
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized == {"x", "r1"}
    feeds = batches[0]
    want = run_ort(emulate(two_conv, EmulationConfig("int8"), amax), feeds)["y"]
    np.testing.assert_allclose(run_ort(q, feeds)["y"], want, rtol=1e-6, atol=1e-6)


def test_pinned_node_is_left_unquantized(two_conv, rng):
    amax = minmax_amax(two_conv, [{"x": rng.randn(1, 3, 6, 6).astype(np.float32)}])
    q = export_qdq(two_conv, amax, pins=["conv2"])
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert conv2.input[0] == "r1" and conv2.input[1] == "w2"
    assert {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"} == {"x"}


def test_fp16_export_keeps_io_fp32_and_pins_fp32(rng):
    model = conv_relu_model()
    x = rng.randn(1, 3, 8, 8).astype(np.float32)
    amax = minmax_amax(model, [{"x": x}])
    q = export_qdq(model, amax, fp16=True)
    onnx.checker.check_model(q)
    assert q.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    relu = next(n for n in q.graph.node if n.op_type == "Relu")
    assert relu.output[0] == "y__fp16"
    y = run_ort(q, {"x": x})["y"]
    ref = run_ort(model, {"x": x})["y"]
    assert np.abs(y - ref).max() < 0.1 * np.abs(ref).max()
    only_fp16 = export_qdq(model, {}, pins=["relu"], fp16=True)
    assert not any(n.op_type == "QuantizeLinear" for n in only_fp16.graph.node)
    relu = next(n for n in only_fp16.graph.node if n.op_type == "Relu")
    assert relu.output[0] == "y"  # pinned: computes in FP32
    np.testing.assert_allclose(run_ort(only_fp16, {"x": x})["y"], ref, atol=0.05 * np.abs(ref).max())


def test_old_opset_is_raised_for_per_channel_dequantize(rng):
    m13 = conv_relu_model()
    m11 = make_model(list(m13.graph.node), list(m13.graph.input), list(m13.graph.output),
                     {i.name: numpy_helper.to_array(i) for i in m13.graph.initializer}, opset=11)  # fmt: skip
    x = rng.randn(1, 3, 8, 8).astype(np.float32)
    q = export_qdq(m11, minmax_amax(m11, [{"x": x}]))
    assert q.opset_import[0].version == 13
    assert np.isfinite(run_ort(q, {"x": x})["y"]).all()


def test_export_without_ranges_fails_with_one_line(two_conv):
    with pytest.raises(InputError, match="calibration cache"):
        export_qdq(two_conv, {})


def test_fp16_export_keeps_an_unnamed_pinned_node_in_fp32():
    """Pins name unnamed nodes ``<op_type>_<index>`` (as bisect reports them); the FP16 export
    must honour those too, not only nodes that have a name."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    weight = nh.from_array(np.random.default_rng(0).random((4, 3, 3, 3), dtype=np.float32), "w")
    nodes = [h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["y"], ["z"])]
    graph = h.make_graph(
        nodes,
        "unnamed",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    types = {}
    for pins in ([], ["Conv_0"]):
        out = export_qdq(model, {}, pins=pins, fp16=True)
        conv = next(n for n in out.graph.node if n.op_type == "Conv")
        types[tuple(pins)] = {i.name: i.data_type for i in out.graph.initializer}[conv.input[1]]
    assert types[()] == TensorProto.FLOAT16 and types[("Conv_0",)] == TensorProto.FLOAT
