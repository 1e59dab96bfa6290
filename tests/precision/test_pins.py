"""pins.json: atomic write/read with validation, and applying pins to a deployable ONNX model."""

# ruff: noqa: F811  (the planted-model fixtures are imported from test_bisect_planted)

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_bisect_planted import outlier_scale_model, overflow_output_model  # noqa: F401 (fixtures)

from trtq._core.errors import InputError
from trtq.precision.bisect import run_bisect
from trtq.precision.builds import ModelBuild, onnx_candidate
from trtq.precision.evaluate import Evaluator, metric_criterion
from trtq.precision.pins import (
    apply_pins,
    check_nodes_exist,
    pinned_nodes,
    read_pins,
    tensorrt_constraints,
    write_pins,
)
from trtq.runtime.build import BuildSpec


@pytest.fixture
def outlier_doc(outlier_scale_model):
    model, batches, amax = outlier_scale_model
    result = run_bisect(model, batches, precision="int8", amax=amax)
    return result.to_json(model={"path": "m.onnx"}, data={"path": "data/"})


def test_round_trip_keeps_the_document(tmp_path, outlier_doc):
    path = tmp_path / "pins.json"
    write_pins(path, outlier_doc)
    doc = read_pins(path)
    assert doc["kind"] == "bisect" and doc["schema"] == 1 and doc["verdict"] == "found"
    assert [p["node"] for p in doc["pins"]] == ["fc3"]
    assert pinned_nodes(doc) == ["fc3", "act3"]
    assert tensorrt_constraints(doc) == [{"layer": "fc3", "nodes": ["fc3", "act3"], "outputs": ["r3"]}]
    assert [t["set_size"] for t in doc["trace"]][:2] == [0, 4]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_nonfinite_metrics_are_written_as_null(tmp_path, overflow_output_model):
    model, batches, _ = overflow_output_model
    doc = run_bisect(model, batches, precision="fp16").to_json()
    write_pins(tmp_path / "p.json", doc)
    raw = json.loads((tmp_path / "p.json").read_text())
    assert raw["baseline_metric"] is None and raw["trace"][0]["metric"] is None
    assert raw["final_metric"] > 0.999


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "compare", "schema": 1}', "not a pins file"),
        ('{"kind": "bisect", "schema": 7, "pins": []}', "unsupported schema 7"),
        ('{"kind": "bisect", "schema": 1, "pins": [{"tensor": "t"}]}', r"pins\[0\] has no \"node\""),
        ('{"kind": "bisect", "schema": 1, "pins": [{"node": "a", "members": "a"}]}', "members"),
        ('{"kind": "bisect", "schema": 1, "pins": [], "settings": {"precision": "int4"}}', "int4"),
    ],
)
def test_bad_pins_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_pins(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_foreign_nodes_are_reported(tmp_path, outlier_scale_model):
    with pytest.raises(InputError, match="no such pins file"):
        read_pins(tmp_path / "nope.json")
    model, _, _ = outlier_scale_model
    check_nodes_exist(model, ["fc3", "act3"])
    with pytest.raises(InputError, match="'conv_99' .*another model"):
        check_nodes_exist(model, ["fc3", "conv_99"], source="pins.json")


def _run(model: onnx.ModelProto, batches) -> np.ndarray:
    candidate = onnx_candidate(model)
    try:
        return np.concatenate([candidate.run(b)["y"] for b in batches])
    finally:
        candidate.close()


def test_applied_int8_model_keeps_pinned_nodes_unquantized_and_matches_bisect(
    outlier_doc, outlier_scale_model
):
    model, batches, amax = outlier_scale_model
    nodes = pinned_nodes(outlier_doc)
    applied = apply_pins(model, nodes, precision="int8", amax=amax)
    onnx.checker.check_model(applied)
    fc3 = next(n for n in applied.graph.node if n.name == "fc3")
    producers = {o: n.op_type for n in applied.graph.node for o in n.output}
    assert all(producers.get(i) != "DequantizeLinear" for i in fc3.input)  # FP32 inputs, FP32 weights
    head = next(n for n in applied.graph.node if n.name == "head")
    assert all(producers.get(i) == "DequantizeLinear" for i in head.input)  # the rest stays INT8
    evaluate = Evaluator(
        lambda pins: onnx_candidate(applied), batches, metric_criterion("cosine"), model=model
    )
    result = evaluate(frozenset(nodes))
    assert result.passed and result.metric == pytest.approx(outlier_doc["final_metric"], abs=1e-4)
    unpinned = apply_pins(model, [], precision="int8", amax=amax)
    ref = _run(model, batches)
    bad = _run(unpinned, batches)
    cos = float(np.sum(bad * ref) / (np.linalg.norm(bad) * np.linalg.norm(ref) + 1e-30))
    assert cos < 0.5  # without the pin the ruined scale destroys the output


def test_applied_fp16_model_computes_in_half_except_the_pins(overflow_output_model):
    model, batches, _ = overflow_output_model
    applied = apply_pins(model, ["head"], precision="fp16")
    onnx.checker.check_model(applied)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in onnx.shape_inference.infer_shapes(applied).graph.value_info
    }
    head = next(n for n in applied.graph.node if n.name == "head")
    fc1 = next(n for n in applied.graph.node if n.name == "fc1")
    assert types[head.input[0]] == onnx.TensorProto.FLOAT
    assert types[fc1.output[0]] == onnx.TensorProto.FLOAT16
    y = _run(applied, batches)
    ref = _run(model, batches)
    assert np.isfinite(y).all() and np.abs(y - ref).max() < 1e-2 * np.abs(ref).max()
    # (Not asserted: that the unpinned FP16 model overflows on ONNX Runtime. Its CPU provider has
    # no FP16 MatMul and computes it in FP32 between Casts, so it does not overflow there; the
    # TensorRT-faithful check of FP16 is the emulation, which `precision pin` also reports.)


def test_apply_rejects_bad_requests(outlier_scale_model):
    model, _, amax = outlier_scale_model
    with pytest.raises(InputError, match="calib"):
        apply_pins(model, ["fc3"], precision="int8")
    with pytest.raises(InputError, match="precision"):
        apply_pins(model, ["fc3"], precision="fp4", amax=amax)


def test_emulation_agrees_with_the_applied_model(outlier_doc, outlier_scale_model):
    """What bisect measured (emulation) is what the deployed Q/DQ model computes, output for output."""
    model, batches, amax = outlier_scale_model
    nodes = frozenset(pinned_nodes(outlier_doc))
    emulated = ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax))(nodes)
    try:
        y_emulated = np.concatenate([emulated.run(b)["y"] for b in batches])
    finally:
        emulated.close()
    y_applied = _run(apply_pins(model, sorted(nodes), precision="int8", amax=amax), batches)
    np.testing.assert_allclose(y_applied, y_emulated, rtol=1e-4, atol=1e-4 * np.abs(y_emulated).max())
