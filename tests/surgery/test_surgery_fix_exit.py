"""``surgery fix``'s honest exit code: 1 (and why) while nodes the parser rejects remain."""

from __future__ import annotations

import json

import onnx
from _surgery_corpus import qlinear_conv_uint8
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h

from trtq.surgery.cli import main


def _bernoulli(tmp_path):
    """Bernoulli: ONNX Runtime runs it, TensorRT's parser does not, and no exact rewrite can exist."""
    nodes = [
        h.make_node("Sigmoid", ["x"], ["p"], name="prob"),
        h.make_node("Bernoulli", ["p"], ["y"], name="coin"),
    ]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 6])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 6])])  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 15)])
    path = tmp_path / "coin.onnx"
    onnx.save(model, str(path))
    return path


def test_fix_exits_1_naming_the_rejected_node_and_why(tmp_path):
    src = _bernoulli(tmp_path)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, ["fix", str(src), "-o", str(out), "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())  # rich wraps long lines on stderr
    assert "no rule applies; model unchanged" in text
    assert (
        "still rejected: coin (Bernoulli): not supported by TensorRT's ONNX parser; no rule: random sampling"
        in text
    )
    assert res.output.strip().splitlines()[-1] == (
        f"error: {src}: 1 node(s) TensorRT's ONNX parser rejects remain (fixed model written; --allow-unfixed to accept)"
    )
    assert "Traceback" not in res.output
    assert out.exists()  # the (here unchanged) model is still written
    data = json.loads((tmp_path / "f.json").read_text())
    (left,) = data["remaining"]
    assert left["node"] == "coin" and left["op"] == "Bernoulli" and "random sampling" in left["why"]
    assert data["written"] is True


def test_allow_unfixed_exits_0_and_still_lists_them(tmp_path):
    src = _bernoulli(tmp_path)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(main, ["fix", str(src), "-o", str(out), "--allow-unfixed", "--json", "-"])
    assert res.exit_code == 0, res.output
    assert [r["node"] for r in json.loads(res.stdout)["remaining"]] == ["coin"]
    assert out.exists()


def test_rule_whose_conditions_fail_is_named(tmp_path):
    """QLinearConv with weights fed at run time: qlinear_conv cannot prove exactness, says what it needs."""
    model = qlinear_conv_uint8()
    w = next(i for i in model.graph.initializer if i.name == "w")
    model.graph.input.append(h.make_tensor_value_info("w", T.INT8, list(w.dims)))
    model.graph.initializer.remove(w)
    src = tmp_path / "qconv.onnx"
    onnx.save(model, str(src))
    res = CliRunner().invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--json", "-"])
    assert res.exit_code == 1
    left = json.loads(res.stdout)["remaining"]
    assert [(r["node"], r["op"]) for r in left] == [("qconv", "QLinearConv")]
    assert left[0]["why"].startswith(
        "qlinear_conv did not apply; it needs: weights, scales and zero points constant"
    )


def test_fixed_qoperator_model_exits_0_with_empty_remaining(tmp_path):
    src = tmp_path / "qconv.onnx"
    onnx.save(qlinear_conv_uint8(), str(src))
    res = CliRunner().invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["remaining"] == [] and data["verify"]["ok"]
    assert set(data["changes"]) == {"qlinear_conv", "qdq_to_float"}


def test_fix_help_documents_exit_codes():
    res = CliRunner().invoke(main, ["fix", "--help"])
    assert "Exit codes:" in res.output and "--allow-unfixed" in res.output
    assert "1  written, but nodes the parser rejects remain" in res.output
