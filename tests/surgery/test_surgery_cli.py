"""The ``surgery`` command line: exit codes, one-line errors, nothing written on failure."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _surgery_corpus import CASES, pow_square, topk_large
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from trtq.surgery.cli import main
from trtq.surgery.rules.pow_square_to_mul import PowSquareToMul


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _one_error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def runner():
    return CliRunner()


def test_help_has_examples(runner):
    for cmd in (["--help"], ["check", "--help"], ["fix", "--help"], ["rules", "--help"]):
        res = runner.invoke(main, cmd)
        assert res.exit_code == 0
        assert "Examples" in res.output


def test_rules_lists_every_rule(runner):
    res = runner.invoke(main, ["rules", "--json", "-"])
    names = [r["name"] for r in json.loads(res.stdout)["rules"]]
    assert len(names) >= 10
    assert {"fold_constants", "topk_split", "layernorm_fusion", "plugin_mapping"} <= set(names)


def test_check_exit_codes_and_json(runner, tmp_path):
    bad = _save(topk_large(), tmp_path / "topk.onnx")
    res = runner.invoke(main, ["check", str(bad), "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 1
    data = json.loads((tmp_path / "f.json").read_text())
    (finding,) = [f for f in data["findings"] if f["node"] == "topk"]
    assert finding["rule"] == "topk_split" and finding["severity"] == "error" and "3840" in finding["reason"]
    ok = _save(pow_square(), tmp_path / "pow.onnx")  # only a warning
    res = runner.invoke(main, ["check", str(ok), "--json", "-"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["warnings"] == 1


def test_check_warns_about_a_model_that_fails_onnx_checker(runner, tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [1, 4])
    y = h.make_tensor_value_info("y", T.FLOAT, [1, 4])
    graph = h.make_graph([h.make_node("Relu", ["dangling"], ["y"], name="r")], "g", [x], [y])
    bad = _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "bad.onnx")
    res = runner.invoke(main, ["check", str(bad), "--json", "-"])
    assert res.exit_code == 0, res.output  # a warning: the table finds every node supported
    (finding,) = json.loads(res.stdout)["findings"]
    assert finding["node"] == "(model)" and finding["source"] == "checker"
    assert "fails onnx.checker" in finding["reason"] and "dangling" in finding["reason"]
    fixed = runner.invoke(main, ["fix", str(bad), "-o", str(tmp_path / "out.onnx")])
    assert fixed.exit_code != 0 and "onnx.checker" in fixed.output
    ok = runner.invoke(main, ["check", str(_save(pow_square(), tmp_path / "pow.onnx")), "--json", "-"])
    assert all(f["source"] != "checker" for f in json.loads(ok.stdout)["findings"])


def test_check_rejects_other_trt_majors(runner, tmp_path):
    model = _save(pow_square(), tmp_path / "m.onnx")
    res = runner.invoke(main, ["check", str(model), "--trt-version", "8.6"])
    assert res.exit_code == 2
    assert "10.x" in _one_error_line(res)


def test_fix_writes_verified_model_and_json(runner, tmp_path):
    src = _save(topk_large(), tmp_path / "topk.onnx")
    before = src.read_bytes()
    out = tmp_path / "out" / "fixed.onnx"
    res = runner.invoke(main, ["fix", str(src), "-o", str(out), "--json", str(tmp_path / "fix.json")])
    assert res.exit_code == 0, res.output
    assert src.read_bytes() == before
    report = json.loads((tmp_path / "fix.json").read_text())
    assert report["changes"]["topk_split"]["nodes"] == ["topk"]
    assert report["verify"]["ok"] and report["written"]
    onnx.checker.check_model(onnx.load(str(out)))
    assert runner.invoke(main, ["check", str(out)]).exit_code == 0


def test_fix_prints_changes_per_rule(runner, tmp_path):
    src = _save(CASES[0].build(), tmp_path / "m.onnx")
    res = runner.invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx")])
    assert res.exit_code == 0
    assert "fold_constants: 1 rewrite(s): axes_add" in res.output
    assert "verified with ONNX Runtime" in res.output


def test_fix_never_overwrites_input_without_inplace(runner, tmp_path):
    src = _save(pow_square(), tmp_path / "m.onnx")
    before = src.read_bytes()
    res = runner.invoke(main, ["fix", str(src), "-o", str(src)])
    assert res.exit_code == 2 and "--inplace" in _one_error_line(res)
    res = runner.invoke(main, ["fix", str(src)])
    assert res.exit_code == 2 and "-o" in _one_error_line(res)
    assert src.read_bytes() == before
    res = runner.invoke(main, ["fix", str(src), "--inplace"])
    assert res.exit_code == 0, res.output
    assert [n.op_type for n in onnx.load(str(src)).graph.node] == ["Mul"]


def test_fix_selected_rules_only(runner, tmp_path):
    src = _save(CASES[14].build(), tmp_path / "ln.onnx")  # layernorm_decomposed
    assert CASES[14].name == "layernorm_decomposed"
    res = runner.invoke(
        main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--rules", "pow_square_to_mul", "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["changes"]) == ["pow_square_to_mul"]
    res = runner.invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--rules", "nope"])
    assert res.exit_code == 2
    assert "choices:" in _one_error_line(res)


def test_fix_plugin_mapping(runner, tmp_path):
    case = next(c for c in CASES if c.name == "det_plugin")
    src = _save(case.build(), tmp_path / "det.onnx")
    out = tmp_path / "o.onnx"
    res = runner.invoke(
        main, ["fix", str(src), "-o", str(out), "--plugin", "Det=DetPlugin_TRT:2", "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["unverified_rules"] == ["plugin_mapping"]
    node = onnx.load(str(out)).graph.node[0]
    assert (node.domain, node.op_type) == ("trt.plugins", "DetPlugin_TRT")
    res = runner.invoke(main, ["fix", str(src), "-o", str(out), "--plugin", "Det"])
    assert res.exit_code == 2 and "OpType=PluginName" in _one_error_line(res)


def test_fix_refuses_a_rewrite_that_changes_outputs(runner, tmp_path, monkeypatch):
    """A broken rule (x + x instead of x * x) must be caught by verification: exit 1, nothing written."""
    original_apply = PowSquareToMul.apply

    def broken(self, graph, match):
        changed = original_apply(self, graph, match)
        for node in graph.nodes:
            if node.name == match.nodes[0]:
                node.op = "Add"
        return changed

    monkeypatch.setattr(PowSquareToMul, "apply", broken)
    src = _save(pow_square(), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    res = runner.invoke(main, ["fix", str(src), "-o", str(out)])
    assert res.exit_code == 1
    assert "changes output 'y'" in _one_error_line(res)
    assert not out.exists()
    assert not list(tmp_path.glob(".o.onnx*"))
    res = runner.invoke(main, ["fix", str(src), "-o", str(out), "--no-verify"])
    assert res.exit_code == 0 and out.exists()


# --- bad input: one line, exit 2, nothing written --------------------------------------------


def test_not_onnx(runner, tmp_path):
    src = tmp_path / "junk.onnx"
    src.write_bytes(b"\x00\x01this is not a protobuf\xff" * 10)
    out = tmp_path / "o.onnx"
    for args in (["check", str(src)], ["fix", str(src), "-o", str(out)]):
        res = runner.invoke(main, args)
        assert res.exit_code == 2, res.output
        assert "junk.onnx" in _one_error_line(res)
    assert not out.exists()


def test_missing_file(runner, tmp_path):
    res = runner.invoke(main, ["check", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 2 and "no such file" in _one_error_line(res)


def test_missing_external_data(runner, tmp_path):
    w = nh.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 64])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 64])], [w])  # fmt: skip
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="ext.bin", size_threshold=0)
    (tmp_path / "ext.bin").unlink()
    out = tmp_path / "o.onnx"
    for args in (["check", str(src)], ["fix", str(src), "-o", str(out)]):
        res = runner.invoke(main, args)
        assert res.exit_code == 2, res.output
        assert "external data" in _one_error_line(res)
    assert not out.exists()


def test_model_onnx_runtime_cannot_run(runner, tmp_path):
    """A custom-domain op: check still reports it, fix cannot verify and writes nothing."""
    node = h.make_node("MyOp", ["x"], ["y"], name="mine", domain="my.ops")
    graph = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("y", T.FLOAT, [2])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("my.ops", 1)])
    src = _save(model, tmp_path / "custom.onnx")
    res = runner.invoke(main, ["check", str(src), "--json", "-"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["findings"][0]["node"] == "mine"
    out = tmp_path / "o.onnx"
    res = runner.invoke(main, ["fix", str(src), "-o", str(out)])
    assert res.exit_code == 2
    assert "ONNX Runtime cannot" in _one_error_line(res)
    assert not out.exists()


def test_bad_shape_flag(runner, tmp_path):
    src = _save(pow_square(), tmp_path / "m.onnx")
    res = runner.invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--shape", "x1x2"])
    assert res.exit_code == 2 and "--shape" in _one_error_line(res)
    res = runner.invoke(main, ["fix", str(src), "-o", str(tmp_path / "o.onnx"), "--shape", "z:1x2"])
    assert res.exit_code == 2 and "unknown input" in _one_error_line(res)


def test_fix_rejects_a_model_that_fails_the_checker(runner, tmp_path):
    node = h.make_node("Relu", ["x"], ["y"], name="r")
    graph = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("z", T.FLOAT, [2])],
    )
    src = _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "broken.onnx")
    out = tmp_path / "o.onnx"
    res = runner.invoke(main, ["fix", str(src), "-o", str(out)])
    assert res.exit_code == 2
    assert "broken.onnx fails onnx.checker" in _one_error_line(res)
    assert not out.exists()


def test_listing_commands_report_a_bad_json_path_in_one_line(tmp_path):
    from click.testing import CliRunner

    from trtq.surgery.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for command in ("rules", "ops"):
        res = CliRunner().invoke(main, [command, "--json", str(blocker / "x.json")])
        assert res.exit_code == 2, res.output
        assert res.output.strip().splitlines() == [
            f"error: {blocker / 'x.json'}: cannot create it: {blocker} is not a folder"
        ]
    res = CliRunner().invoke(
        main, ["fix", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--trials", "0"]
    )
    assert res.exit_code == 2 and "--trials" in res.output
