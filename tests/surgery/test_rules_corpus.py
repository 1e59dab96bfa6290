"""Every rewrite rule, proven on a model built to contain its pattern (see _surgery_corpus.py).

For each case: ``check`` reports the pattern's node and names the rule; ``fix`` applies that rule;
ONNX Runtime gives the same outputs before and after on random and edge-case inputs (exact for
integers, relative error <= 1e-5 for floats); ``check`` no longer reports the node; and a second
``fix`` changes nothing (idempotent).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _surgery_corpus import CASES, Case

from trtq.surgery.check import check_model
from trtq.surgery.fix import fix_model
from trtq.surgery.rule import make_rules, rule_names
from trtq.surgery.verify import input_shapes, make_inputs, verify_models


def _fix(case: Case, model: onnx.ModelProto):
    return fix_model(model, make_rules(plugins=case.plugins or {}))


@pytest.fixture(scope="module")
def fixed():
    out = {}
    for case in CASES:
        model = case.build()
        out[case.name] = (model, _fix(case, model))
    return out


def test_corpus_has_fifteen_models_and_covers_every_rule():
    from _surgery_corpus_ops import CASES as OPS_CASES  # the operator-lowering rules' corpus

    assert len(CASES) >= 15
    assert {c.rule for c in [*CASES, *OPS_CASES]} == set(rule_names())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_check_reports_the_pattern_with_its_rule(case: Case):
    report = check_model(case.build())
    hits = [f for f in report.findings if f.node == case.anchor]
    assert hits, f"check did not report {case.anchor}: {report.findings}"
    assert (
        all(f.rule == case.rule for f in hits if f.rule)
        and any(f.rule == case.rule for f in hits)
        or (case.rule == "plugin_mapping" and all(f.rule is None for f in hits))
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fix_applies_the_rule_and_check_is_clean(case: Case, fixed):
    original, result = fixed[case.name]
    assert result.changes[case.rule], f"{case.rule} did not fire: {result.changes}"
    onnx.checker.check_model(result.model)
    onnx.shape_inference.infer_shapes(result.model, strict_mode=True)
    after = check_model(result.model)
    assert case.anchor not in {f.node for f in after.findings}
    assert not after.errors, after.errors
    assert not [f for f in after.findings if f.rule == case.rule]


@pytest.mark.parametrize("case", [c for c in CASES if not c.plugins], ids=lambda c: c.name)
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
    reference = case.reference() if case.reference else original  # the original may be invalid ONNX
    verdict = verify_models(reference, result.model, feeds_list=feeds)
    assert verdict.ok, verdict.to_dict()
    for diff in verdict.outputs:
        assert diff.rel <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fix_is_idempotent(case: Case, fixed):
    _, result = fixed[case.name]
    again = _fix(case, result.model)
    assert not again.changed, again.changes


def test_integer_rules_are_exact_at_the_extremes(fixed):
    """uint8 255 against the largest weights: the float path must still give the exact int32."""
    original, result = fixed["conv_integer"]
    x = {"x": np.full((1, 3, 5, 5), 255, np.uint8)}
    verdict = verify_models(original, result.model, feeds_list=[x])
    assert verdict.ok and verdict.outputs[0].max_abs == 0.0


def test_plugin_node_is_in_plugin_domain(fixed):
    _, result = fixed["det_plugin"]
    (node,) = [n for n in result.model.graph.node if n.name == "det"]
    assert (node.domain, node.op_type) == ("trt.plugins", "DetPlugin_TRT")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"1"
    assert "trt.plugins" in {o.domain for o in result.model.opset_import}
