"""The FP16 range check on attention masks: -inf already in FP32 is no finding; a finite mask
fill (float32's lowest value) that FP16 turns into -inf is one, named as harmless for Softmax."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtq.precision.compare import compare_runs
from trtq.precision.emulate import EmulationConfig
from trtq.precision.fp16_range import MASK_NOTE, fp16_range_check

LOWEST = float(np.finfo(np.float32).min)


def _masked_attention(fill: float, *, softmax: bool = True, big_weight: float = 1.0) -> onnx.ModelProto:
    """scores = x @ w; probs = Softmax(scores + mask) with a constant padding mask of 0 and ``fill``."""
    mask = np.where(np.arange(8) >= 6, fill, 0.0).astype(np.float32)[None]
    w = np.eye(8, dtype=np.float32) * big_weight
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"], name="qk"),
        helper.make_node("Add", ["scores", "mask"], ["masked"], name="add_mask"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1)
        if softmax
        else helper.make_node("Relu", ["masked"], ["probs"], name="relu"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "attn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [2, 8])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(mask, "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _batches(n=3):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 8)).astype(np.float32)} for _ in range(n)]


def test_minus_inf_mask_already_in_fp32_is_no_finding():
    model = _masked_attention(-np.inf)
    _, observed = compare_runs(model, _batches(), [EmulationConfig("fp16")])
    # the masked activation holds -inf in FP32: its finite part is what FP16 must hold
    assert observed["masked"] == pytest.approx(max(np.abs(b["x"]).max() for b in _batches()), rel=1e-6)
    assert fp16_range_check(model, observed=observed) == []


def test_lowest_value_mask_is_a_finding_named_harmless_for_softmax():
    model = _masked_attention(LOWEST)
    _, observed = compare_runs(model, _batches(), [EmulationConfig("fp16")])
    issues = {i.tensor: i for i in fp16_range_check(model, observed=observed)}
    assert set(issues) == {"mask", "masked"}
    assert issues["mask"].kind == "initializer" and issues["mask"].max_abs == pytest.approx(-LOWEST)
    assert issues["mask"].note == MASK_NOTE and issues["masked"].note == MASK_NOTE
    assert "whole row" in MASK_NOTE


def test_a_large_finite_value_without_a_softmax_or_below_mask_size_gets_no_mask_note():
    no_softmax = _masked_attention(LOWEST, softmax=False)
    (issue,) = [i for i in fp16_range_check(no_softmax) if i.tensor == "mask"]
    assert issue.note is None
    big_weight = _masked_attention(0.0, big_weight=1e5)
    (w,) = fp16_range_check(big_weight)
    assert w.tensor == "w" and w.max_abs == pytest.approx(1e5) and w.note is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_metrics_take_a_mask_fill_turned_infinite_as_no_error(dtype):
    """FP32 -3.4e38 vs FP16 -inf at masked positions: no error (both the compiled and the numpy
    path); a finite value turned inf, or an inf of the other sign, still is one."""
    from trtq.precision.metrics import tensor_metrics

    ref = np.array([LOWEST, 1.0, 2.0, -LOWEST], np.float32).astype(
        np.float64 if dtype == np.float64 else np.float32
    )
    got = np.array([-np.inf, 1.0, 2.0, np.inf], dtype)
    m = tensor_metrics(got.astype(ref.dtype) if dtype != np.float16 else got, ref)
    assert m["nonfinite"] == 0.0 and m["max_abs"] == 0.0 and m["cosine"] == pytest.approx(1.0)
    wrong_sign = np.array([np.inf, 1.0, 2.0, np.inf], ref.dtype)
    assert tensor_metrics(wrong_sign, ref)["nonfinite"] == 0.25
    overflow = np.array([LOWEST, 1.0, np.inf, -LOWEST], ref.dtype)  # 2.0 -> inf is an error
    assert tensor_metrics(overflow, ref)["nonfinite"] == 0.25
