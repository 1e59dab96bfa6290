"""``precision compare`` and ``precision export`` end to end through click, on tiny models and
.npy data folders; bad input gives one line and exit code 2."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from precision_tiny_models import two_conv_workspace

from trtq.precision.cli import main


@pytest.fixture
def workspace(tmp_path):
    return two_conv_workspace(tmp_path)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_has_examples():
    for cmd in ([], ["compare"], ["export"], ["equalize"]):
        res = _invoke(*cmd, "--help")
        assert res.exit_code == 0 and "Examples" in res.output


def test_compare_both_precisions_both_modes_json(workspace):
    tmp, model, data, cache = workspace
    out = tmp / "r.json"
    res = _invoke("compare", model, "--data", data, "--cache", cache, "--precision", "both", "--mode", "both",
                  "--json", out, "--top", "3")  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "compare" and doc["schema"] == 1 and doc["backend"] == "onnxruntime (emulated)"
    assert [(r["precision"], r["mode"], r["placement"]) for r in doc["runs"]] == [
        ("fp16", "graphwise", None), ("fp16", "layerwise", None),
        ("int8", "graphwise", "explicit"), ("int8", "layerwise", "explicit"),
    ]  # fmt: skip
    graphwise = doc["runs"][2]
    assert [la["tensor"] for la in graphwise["layers"]] == ["c1", "r1", "c2", "s", "y"]
    keys = {
        "index",
        "node",
        "op_type",
        "tensor",
        "pinned",
        "max_abs",
        "mean_abs",
        "rel_l2",
        "cosine",
        "sqnr_db",
        "nonfinite",
    }
    assert keys <= set(graphwise["layers"][0])
    assert graphwise["outputs"][0]["tensor"] == "y" and 0.9 < graphwise["outputs"][0]["cosine"] < 1.0
    assert doc["data"]["images_used"] == 4 and doc["model"]["inputs"][0]["name"] == "x"
    assert doc["fp16_range"] == []
    # the table names the op types and nodes
    assert "conv2" in res.output and "Conv" in res.output


def test_compare_calibrates_when_no_cache_and_reads_plain_pin_list(workspace):
    tmp, model, data, _ = workspace
    pins = tmp / "pins.json"
    pins.write_text(json.dumps(["conv1", "relu1"]))
    res = _invoke(
        "compare", model, "--data", data, "--precision", "int8", "--pins", pins, "--json", "-", "-q"
    )
    assert res.exit_code == 0, res.output
    run = json.loads(res.output)["runs"][0]
    assert run["pins"] == ["conv1", "relu1"]
    by_tensor = {la["tensor"]: la for la in run["layers"]}
    assert by_tensor["r1"]["pinned"] and by_tensor["c1"]["pinned"] and not by_tensor["c2"]["pinned"]
    assert by_tensor["r1"]["max_abs"] == 0.0  # pinned layer is exact FP32


def test_bad_inputs_are_one_line_errors(workspace):
    tmp, model, data, cache = workspace
    res = _invoke("compare", tmp / "nope.onnx", "--data", data, "--precision", "fp16")
    assert res.exit_code == 2 and res.output.strip().startswith("error:") and "nope.onnx" in res.output
    assert len(res.output.strip().splitlines()) == 1
    pins = tmp / "pins.json"
    pins.write_text(json.dumps(["missing_node"]))
    res = _invoke("compare", model, "--data", data, "--precision", "fp16", "--pins", pins)
    assert res.exit_code == 2 and "missing_node" in res.output
    (tmp / "bad.json").write_text("{not json")
    res = _invoke(
        "export", model, "--int8", "--cache", cache, "--pins", tmp / "bad.json", "-o", tmp / "q.onnx"
    )
    assert res.exit_code == 2 and "bad.json" in res.output and not (tmp / "q.onnx").exists()
    res = _invoke("export", model, "--int8", "-o", tmp / "q.onnx")
    assert res.exit_code == 2 and "--cache" in res.output


def test_tensorrt_backend_without_tensorrt_is_one_clear_line(workspace):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except Exception:
        pass
    _, model, data, cache = workspace
    res = _invoke(
        "compare", model, "--data", data, "--cache", cache, "--precision", "fp16", "--backend", "tensorrt"
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "onnxruntime" in lines[0]


def test_export_writes_checked_qdq_model_with_bisect_pins(workspace):
    tmp, model, _, cache = workspace
    pins = tmp / "pins.json"
    pins.write_text(
        json.dumps(
            {
                "kind": "bisect",
                "schema": 1,
                "pins": [{"node": "conv2", "tensor": "s", "op_type": "Conv", "layerwise_error": 0.1}],
            }
        )
    )
    out = tmp / "q.onnx"
    res = _invoke("export", model, "--int8", "--cache", cache, "--pins", pins, "-o", out)
    assert res.exit_code == 0, res.output
    q = onnx.load(out)
    onnx.checker.check_model(q, full_check=True)
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert conv2.input[1] == "w2"  # pinned: FP32 weights, no DequantizeLinear
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 1


def test_report_is_written(workspace):
    pytest.importorskip("trtq.reports.build")
    tmp, model, data, cache = workspace
    html = tmp / "r.html"
    res = _invoke(
        "compare",
        model,
        "--data",
        data,
        "--cache",
        cache,
        "--precision",
        "int8",
        "--mode",
        "both",
        "--report",
        html,
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
