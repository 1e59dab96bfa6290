"""Q/DQ models as input: groups, strip, float original, compare and bisect over groups, made by
trtq's own export and by ONNX Runtime's ``quantize_static``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from precision_tiny_models import minmax_amax, run_ort, two_conv_model
from test_bisect_planted import make_outlier_scale

from trtq.precision.emulate import folded
from trtq.precision.evaluate import metric_criterion
from trtq.precision.export import export_qdq
from trtq.precision.qdq import fake_quantize_weight, weight_axis
from trtq.precision.qdq_model import (
    compare_qdq,
    find_groups,
    float_original,
    is_qdq_model,
    recovery_kind,
    run_bisect_qdq,
    strip_qdq,
    verify_qdq_pins,
)


def _two_conv_batches(n: int = 4):
    rs = np.random.RandomState(0)
    return [{"x": rs.randn(1, 3, 6, 6).astype(np.float32)} for _ in range(n)]


def _ort_qdq(model: onnx.ModelProto, batches, tmp_path, ruin: str | None = None) -> onnx.ModelProto:
    """``model`` quantized by ONNX Runtime's quantize_static (QDQ, symmetric INT8 activations,
    per-channel weights); ``ruin``: a tensor whose activation scale is then multiplied by 300."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "ort.qdq.onnx"
    onnx.save(model, src)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    q = onnx.load(dst)
    if ruin is not None:
        scale = next(n.input[1] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == ruin)
        init = next(i for i in q.graph.initializer if i.name == scale)
        value = onnx.numpy_helper.to_array(init) * np.float32(300.0)
        init.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), scale))
    return q


def test_groups_of_a_trtq_export_name_the_consumers():
    model = two_conv_model()
    batches = _two_conv_batches()
    qdq = export_qdq(model, minmax_amax(model, batches))
    groups = {g.node: g for g in find_groups(qdq)}
    assert is_qdq_model(qdq) and not is_qdq_model(model)
    assert {"conv1", "conv2"} <= set(groups)
    assert groups["conv1"].activations == ((0, "x"),)
    assert groups["conv1"].constants  # the INT8 weight's DequantizeLinear
    assert recovery_kind(qdq) == "dequantized-weights"


def test_float_original_of_a_trtq_export_is_the_model_with_dequantized_weights():
    model = two_conv_model()
    batches = _two_conv_batches()
    qdq = export_qdq(model, minmax_amax(model, batches))
    recovered = float_original(qdq)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in recovered.graph.node)
    # the expected model: the folded float model with each weight rounded to its INT8 grid
    expected = folded(model)
    for node in expected.graph.node:
        if node.op_type == "Conv":
            init = next(i for i in expected.graph.initializer if i.name == node.input[1])
            w = onnx.numpy_helper.to_array(init)
            w_q = fake_quantize_weight(w, weight_axis("Conv", 1, w.shape, {}))
            init.CopyFrom(onnx.numpy_helper.from_array(w_q, init.name))
    for feeds in batches:
        got, want = run_ort(recovered, feeds), run_ort(expected, feeds)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)


def test_float_original_is_exact_for_qdq_of_float_weights():
    from onnx import helper

    model = two_conv_model()
    w1 = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w1"))
    g = model.graph
    g.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.array(np.abs(w1).max() / 127, np.float32), "w1_s"),
            onnx.numpy_helper.from_array(np.array(0, np.int8), "w1_z"),
        ]
    )
    q = [
        helper.make_node("QuantizeLinear", ["w1", "w1_s", "w1_z"], ["w1_q"], name="w1_q"),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1_dq"], name="w1_dq"),
    ]
    g.node[0].input[1] = "w1_dq"
    for n in reversed(q):
        g.node.insert(0, n)
    assert recovery_kind(model) == "exact"
    recovered = float_original(model)
    feeds = _two_conv_batches(1)[0]
    np.testing.assert_array_equal(run_ort(recovered, feeds)["y"], run_ort(two_conv_model(), feeds)["y"])


def test_strip_one_group_leaves_the_others():
    model = two_conv_model()
    batches = _two_conv_batches()
    qdq = export_qdq(model, minmax_amax(model, batches))
    stripped = strip_qdq(qdq, ["conv2"])
    left = {g.node for g in find_groups(stripped)}
    assert "conv2" not in left and "conv1" in left
    onnx.checker.check_model(stripped)


def test_compare_matches_tensors_by_name_for_a_trtq_export():
    model = two_conv_model()
    batches = _two_conv_batches()
    qdq = export_qdq(model, minmax_amax(model, batches))
    run = compare_qdq(qdq, folded(model), batches)
    tensors = {r.tensor for r in run.layers}
    assert {"r1", "s"} <= tensors  # float tensors matched under their own names
    assert run.outputs[0].tensor == "y" and run.outputs[0].metrics["cosine"] > 0.9
    assert all(r.metrics["rel_l2"] < 0.2 for r in run.layers)


def test_compare_matches_tensors_by_name_for_ort_quantize_static(tmp_path):
    model = two_conv_model()
    batches = _two_conv_batches()
    qdq = _ort_qdq(model, batches, tmp_path)
    assert {"conv1", "conv2"} <= {g.node for g in find_groups(qdq)}
    run = compare_qdq(qdq, model, batches)
    assert "r1" in {r.tensor for r in run.layers}
    assert run.outputs[0].metrics["cosine"] > 0.9


def _planted_trtq():
    model, batches, amax = make_outlier_scale()
    return model, batches, export_qdq(model, amax)


@pytest.mark.parametrize("strategy", ["ranked", "contiguous"])
def test_bisect_finds_the_planted_group_of_a_trtq_export(strategy):
    model, batches, qdq = _planted_trtq()
    result = run_bisect_qdq(qdq, batches, reference=model, strategy=strategy)
    assert result.verdict == "found"
    assert "fc3" in result.pin_nodes
    assert result.settings["qdq_model"] is True
    if strategy == "ranked":
        assert result.pin_nodes == ["fc3"]
        assert result.pins[0].error is not None


def test_bisect_without_reference_recovers_the_float_model():
    _, batches, qdq = _planted_trtq()
    result = run_bisect_qdq(qdq, batches)
    assert result.verdict == "found" and result.pin_nodes == ["fc3"]
    assert result.settings["reference_recovered"] == "dequantized-weights"


def test_bisect_and_pin_an_ort_quantize_static_model_with_a_ruined_scale(tmp_path):
    model, batches, _ = make_outlier_scale()
    qdq = _ort_qdq(model, batches, tmp_path, ruin="r2")
    criterion = metric_criterion("cosine", 0.999)
    result = run_bisect_qdq(qdq, batches, reference=model, criterion=criterion)
    assert result.verdict == "found"
    assert result.pin_nodes == ["fc3"]
    check = verify_qdq_pins(qdq, result.pin_nodes, batches, criterion, reference=model)
    assert check.passed
    unpinned = verify_qdq_pins(qdq, [], batches, criterion, reference=model)
    assert not unpinned.passed
