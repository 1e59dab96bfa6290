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
