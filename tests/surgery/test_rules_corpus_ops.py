"""The operator-lowering rules, proven on models built to contain each pattern
(see _surgery_corpus_ops.py), with the same proofs as test_rules_corpus.py.

For each case: ``check`` reports the pattern's node and names the rule; ``fix`` applies that rule;
the result passes ``onnx.checker`` and strict shape inference; ONNX Runtime gives the same outputs
before and after on random and edge-case inputs (exact for integers, relative error <= 1e-5 for
floats); ``check`` no longer reports the node; and a second ``fix`` changes nothing. ONNX Runtime
has CPU kernels for every operator here, so it runs the "before" model too.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _surgery_corpus import Case
from _surgery_corpus_ops import CASES, dft_model

from trtq.surgery.check import check_model
from trtq.surgery.fix import fix_model
from trtq.surgery.rule import make_rules, rule_class
from trtq.surgery.verify import input_shapes, make_inputs, verify_models


@pytest.fixture(scope="module")
def fixed():
    return {case.name: (model := case.build(), fix_model(model, make_rules())) for case in CASES}


def _anchor_op(case: Case) -> str:
    (node,) = [n for n in case.build().graph.node if n.name == case.anchor]
    return node.op_type


def test_every_rule_states_its_conditions_and_rewrites_the_anchor_op():
    for case in CASES:
        cls = rule_class(case.rule)
        if case.rule == "fold_constants":  # an existing rule, proven here on more op types
            continue
        assert "exact" in (sys.modules[cls.__module__].__doc__ or ""), cls.__module__
        assert _anchor_op(case) in cls.rewrites, (case.name, cls.rewrites)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_check_reports_the_pattern_with_its_rule(case: Case):
    report = check_model(case.build())
    hits = [f for f in report.findings if f.node == case.anchor]
    assert hits, f"check did not report {case.anchor}: {report.findings}"
    assert any(f.severity == "error" for f in hits)
    assert all(f.rule == case.rule for f in hits), [(f.reason, f.rule) for f in hits]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fix_applies_the_rule_and_check_is_clean(case: Case, fixed):
    original, result = fixed[case.name]
    assert result.changes[case.rule], f"{case.rule} did not fire: {result.changes}"
    onnx.checker.check_model(result.model)
    onnx.shape_inference.infer_shapes(result.model, check_type=True, strict_mode=True)
    after = check_model(result.model)
    assert case.anchor not in {f.node for f in after.findings}
    assert not after.errors, after.errors
    assert not [f for f in after.findings if f.rule == case.rule]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_unchanged_on_random_and_edge_inputs(case: Case, fixed):
    original, result = fixed[case.name]
    shapes = input_shapes(original)
    feeds = [make_inputs(original, shapes, trial, seed=42) for trial in range(4)]
    for edge in case.edge():
        full = make_inputs(
            original,
            {k: v.shape for k, v in edge.items()} | {k: s for k, s in shapes.items() if k not in edge},
            0,
        )
        full.update(edge)
        feeds.append(full)
    verdict = verify_models(original, result.model, feeds_list=feeds)
    assert verdict.ok, verdict.to_dict()
    for diff in verdict.outputs:
        assert diff.rel <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fix_is_idempotent(case: Case, fixed):
    _, result = fixed[case.name]
    again = fix_model(result.model, make_rules())
    assert not again.changed, again.changes


@pytest.mark.parametrize("length", [100, 1000, 1024])
def test_dft_rewrite_is_within_1e6_of_a_float64_fft(length: int):
    """The MatMul form against the float64 truth, at lengths where ONNX Runtime's FP32 DFT is
    itself off by more than 1e-5 (non-powers of two) and where it is not (1024)."""
    model = dft_model([2, length, 1], [2, length, 2])
    result = fix_model(model, make_rules())
    assert result.changes["dft_matmul"]
    x = np.random.default_rng(length).standard_normal((2, length, 1)).astype(np.float32)
    (ours,) = ort.InferenceSession(result.model.SerializeToString()).run(None, {"x": x})
    truth = np.fft.fft(x[..., 0].astype(np.float64), axis=1)
    truth = np.stack([truth.real, truth.imag], -1)
    assert np.abs(ours - truth).max() / np.abs(truth).max() <= 1e-6


def _one_node(op, inputs, outputs, inits=(), opset=18, **attrs) -> onnx.ModelProto:
    from onnx import helper as h

    graph = h.make_graph([h.make_node(op, [i[0] for i in inputs] + [n for n, _ in inits], ["y"], name="n", **attrs)],
                         "g", [h.make_tensor_value_info(n, e, s) for n, e, s in inputs], [outputs],
                         initializer=[onnx.numpy_helper.from_array(v, n) for n, v in inits])  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _outside_conditions():
    from onnx import TensorProto as T
    from onnx import helper as h

    y = h.make_tensor_value_info("y", T.UNDEFINED, None)
    i64 = np.int64
    return {
        # UINT32 is not a TensorRT type: BitShift/BitwiseNot there cannot be lowered.
        "bitshift_uint8": _one_node(
            "BitShift", [("x", T.UINT32, [3]), ("s", T.UINT32, [3])], y, direction="LEFT"
        ),
        "bitwise_not_arith": _one_node("BitwiseNot", [("x", T.UINT32, [3])], y),
        "bitwise_to_bits": _one_node("BitwiseAnd", [("a", T.INT16, [3]), ("b", T.INT16, [3])], y),
        # Indices from a graph input may repeat: the order of duplicate writes is unspecified.
        "maxunpool_scatter": _one_node(
            "MaxUnpool",
            [("x", T.FLOAT, [1, 1, 2, 2]), ("i", T.INT64, [1, 1, 2, 2])],
            y,
            kernel_shape=[2, 2],
            strides=[2, 2],
        ),
        # align_corners=1 with a spatial size of 1: 2/(s - 1) is undefined, implementations differ.
        "affine_grid_matmul": _one_node(
            "AffineGrid",
            [("t", T.FLOAT, [1, 2, 3])],
            y,
            [("size", np.array([1, 1, 1, 4], i64))],
            opset=20,
            align_corners=1,
        ),
        # onesided complex input: the spec defines no result.
        "dft_matmul": _one_node("DFT", [("x", T.FLOAT, [1, 8, 2])], y, opset=17, onesided=1),
        # inconsistent column count (Col2Im would reject it at run time).
        "col2im_gather": _one_node(
            "Col2Im",
            [("x", T.FLOAT, [1, 4, 5])],
            y,
            [("image", np.array([3, 3], i64)), ("block", np.array([2, 2], i64))],
        ),
        # a size that is only known at run time.
        "center_crop_pad_slice": _one_node(
            "CenterCropPad", [("x", T.FLOAT, [3, "w"]), ("s", T.INT64, [2])], y
        ),
    }


@pytest.mark.parametrize("rule", sorted(_outside_conditions()))
def test_rule_does_not_fire_outside_its_conditions(rule: str):
    model = _outside_conditions()[rule]
    result = fix_model(model, make_rules([rule]), check=False)
    assert not result.changes[rule]
    report = check_model(model)
    assert report.findings and all(f.rule != rule for f in report.findings)
