"""``surgery check`` against the support table: ops, types, restrictions, subgraphs, functions,
and the TensorRT-parser path (a fake parser of both API generations, plus the real bindings' API
shape when the cached bindings wheels are available)."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from trtq._core.errors import MissingDependencyError
from trtq.surgery import support_table, trt_capability
from trtq.surgery.check import check_model


def _model(nodes, inputs, outputs, inits=(), opset=17, functions=(), extra=()):
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset), *extra], functions=list(functions))
    m.ir_version = 8
    return m


def _vi(name, elem=T.FLOAT, shape=(1, 3, 8, 8)):
    return h.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def _by_node(report):
    return {f.node: f for f in report.findings}


def test_table_encodes_the_documented_facts():
    assert support_table.is_supported("LayerNormalization")
    assert support_table.is_supported("NonMaxSuppression")
    for op in (
        "ConvInteger",
        "MatMulInteger",
        "QLinearConv",
        "SequenceConstruct",
        "DynamicQuantizeLinear",
        "Det",
    ):
        assert support_table.is_known(op) and not support_table.is_supported(op)
    assert "INT64" in support_table.OP_TYPES["TopK"] and "BOOL" not in support_table.OP_TYPES["Conv"]
    assert support_table.TOPK_MAX_K == 3840
    assert "10.15" in support_table.SOURCE and (support_table.MIN_OPSET, support_table.MAX_OPSET) == (9, 24)


def test_resize_modes_are_checked_and_cubic_has_no_rule():
    scales = nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        h.make_node("Resize", ["x", "", "scales"], ["a"], name="cubic", mode="cubic"),
        h.make_node(
            "Resize",
            ["a", "", "scales"],
            ["b"],
            name="crop",
            coordinate_transformation_mode="tf_crop_and_resize",
        ),
        h.make_node("Resize", ["b", "", "scales"], ["y"], name="fine", mode="linear"),
    ]
    report = check_model(_model(nodes, [_vi("x")], [_vi("y", shape=(1, 3, 64, 64))], [scales]))
    found = _by_node(report)
    assert "cubic" in found["cubic"].reason and found["cubic"].rule is None
    assert "tf_crop_and_resize" in found["crop"].reason
    assert "fine" not in found


def test_topk_limit_is_inclusive_and_scatternd_reduction():
    k = nh.from_array(np.array([3840], np.int64), "k")
    nodes = [h.make_node("TopK", ["x", "k"], ["v", "i"], name="topk"),
             h.make_node("ScatterND", ["x", "idx", "x"], ["s"], name="scatter", reduction="mul")]  # fmt: skip
    idx = nh.from_array(np.zeros((1, 0), np.int64), "idx")
    report = check_model(
        _model(nodes, [_vi("x", shape=(2, 5000))], [_vi("v", shape=None), _vi("s", shape=None)], [k, idx])
    )
    found = _by_node(report)
    assert "topk" not in found
    assert "mul" in found["scatter"].reason


def test_unsupported_types_and_opset_range():
    nodes = [h.make_node("Identity", ["x"], ["y"], name="strings")]
    report = check_model(_model(nodes, [_vi("x", T.STRING, (2,))], [_vi("y", T.STRING, (2,))], opset=8))
    reasons = " | ".join(f.reason for f in report.findings)
    assert "STRING" in reasons and "does not support" in reasons
    assert any("opset 8" in f.reason for f in report.findings)
    assert report.errors


def test_custom_domain_is_rejected_but_trt_plugins_pass():
    nodes = [h.make_node("Foo", ["x"], ["a"], name="foo", domain="acme"),
             h.make_node("FooPlugin", ["a"], ["y"], name="plugin", domain="trt.plugins")]  # fmt: skip
    extra = [h.make_opsetid("acme", 1), h.make_opsetid("trt.plugins", 1)]
    found = _by_node(check_model(_model(nodes, [_vi("x")], [_vi("y")], extra=extra)))
    assert "acme" in found["foo"].reason
    assert "plugin" not in found


def test_loop_body_and_function_bodies_are_inspected():
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         h.make_node("Hardmax", ["v_in"], ["hm"], name="body_ok"),
         h.make_node("MatMulInteger", ["q", "q"], ["bad"], name="body_mmi"),
         h.make_node("Identity", ["v_in"], ["v_out"], name="body_id")],
        "body",
        [_vi("i", T.INT64, ()), _vi("cond_in", T.BOOL, ()), _vi("v_in", shape=(2, 2))],
        [_vi("cond_out", T.BOOL, ()), _vi("v_out", shape=(2, 2))],
        initializer=[nh.from_array(np.ones((2, 2), np.uint8), "q")],
    )  # fmt: skip
    fn = h.make_function("acme.fn", "Inner", ["A"], ["B"], [h.make_node("Unique", ["A"], ["B"], name="fn_unique")],
                         [h.make_opsetid("", 17)])  # fmt: skip
    nodes = [
        h.make_node("Loop", ["trip", "", "x"], ["y"], name="loop", body=body),
        h.make_node("Inner", ["y"], ["z"], name="call", domain="acme.fn"),
    ]
    trip = nh.from_array(np.array(2, np.int64), "trip")
    model = _model(nodes, [_vi("x", shape=(2, 2))], [_vi("z", shape=None)], [trip], functions=[fn],
                   extra=[h.make_opsetid("acme.fn", 1)])  # fmt: skip
    found = _by_node(check_model(model))
    assert found["body_mmi"].location == "graph/loop.body"
    assert found["fn_unique"].location == "function acme.fn.Inner"
    assert found["fn_unique"].rule == "inline_local_functions"
    assert "call" not in found and "body_ok" not in found


# --- the TensorRT path ----------------------------------------------------------------------


class _FakeError:
    def __init__(self, node: int, desc: str) -> None:
        self._node, self._desc = node, desc

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc


def _fake_tensorrt(v2: bool) -> types.ModuleType:
    """FAKE TensorRT module: a parser that rejects node 1 of any model (API shape of TRT 10/11)."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "10.99-fake"

    class Logger:
        ERROR = 1

        def __init__(self, level):
            pass

    class Flag:
        EXPLICIT_BATCH = 0

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 1

        def get_error(self, i):
            return _FakeError(1, "fake: no importer for this node")

    if v2:
        Parser.supports_model_v2 = lambda self, data, path: False
        Parser.num_subgraphs = 2
        Parser.get_subgraph_nodes = lambda self, i: [[0], [1]][i]
        Parser.is_subgraph_supported = lambda self, i: i == 0
    else:
        Parser.supports_model = lambda self, data, path: (False, [([0], True), ([1], False)])
    mod.Logger, mod.Builder, mod.OnnxParser, mod.NetworkDefinitionCreationFlag = Logger, Builder, Parser, Flag
    return mod


@pytest.mark.parametrize("v2", [True, False], ids=["supports_model_v2", "supports_model"])
def test_tensorrt_parser_verdict_is_merged(monkeypatch, v2):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(v2))
    nodes = [h.make_node("Relu", ["x"], ["a"], name="relu"), h.make_node("Sigmoid", ["a"], ["y"], name="sig")]
    report = check_model(_model(nodes, [_vi("x")], [_vi("y")]), use_tensorrt=True)
    (finding,) = report.findings
    assert (finding.node, finding.source, finding.reason) == (
        "sig",
        "tensorrt",
        "fake: no importer for this node",
    )
    assert report.trt_version == "10.99-fake"


def test_tensorrt_path_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # a namespace-like impostor
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", None)  # and no bare bindings wheel
    nodes = [h.make_node("Relu", ["x"], ["y"], name="relu")]
    with pytest.raises(MissingDependencyError, match="built-in support table") as err:
        check_model(_model(nodes, [_vi("x")], [_vi("y")]), use_tensorrt=True)
    assert "--backend" not in str(err.value)  # surgery has no backend flag: the hint is its own


@pytest.mark.parametrize("major", [10, 11])
def test_real_bindings_have_the_parser_api_we_call(tmp_path, major):
    """The fake above mirrors the real classes: check them in the real bindings (stub natives)."""
    from trt_stubs import real_bindings

    bindings = real_bindings(major, tmp_path)
    code = (
        "import tensorrt_bindings as trt\n"
        "from trtq.surgery.trt_capability import PARSER_API_V2, PARSER_ERROR_API\n"
        "missing = [a for a in PARSER_API_V2 if not hasattr(trt.OnnxParser, a)]\n"
        "missing += [a for a in PARSER_ERROR_API if not hasattr(trt.ParserError, a)]\n"
        "missing += [a for a in ('Logger', 'Builder', 'NetworkDefinitionCreationFlag') if not hasattr(trt, a)]\n"
        "print('MISSING', missing)\n"
    )
    res = bindings.run(["-c", code], timeout=120)
    assert "MISSING []" in res.stdout, res.stdout + res.stderr
    assert trt_capability.PARSER_API_V1 == ("supports_model",)


def test_check_does_not_modify_the_model():
    nodes = [h.make_node("Pow", ["x", "two"], ["y"])]
    model = _model(nodes, [_vi("x")], [_vi("y")], [nh.from_array(np.array(2.0, np.float32), "two")])
    before = model.SerializeToString()
    report = check_model(model)
    assert model.SerializeToString() == before
    assert report.findings[0].node == "Pow_0"  # unnamed nodes are named <OpType>_<index>
    onnx.checker.check_model(model)


def test_uint8_only_at_the_network_boundary():
    """UINT8 may be a network input/output, not an internal tensor; DynamicQuantizeLinear is rejected."""
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"),
        h.make_node("Cast", ["x"], ["mid"], name="to_u8_inside", to=T.UINT8),
        h.make_node("Cast", ["mid"], ["y"], name="back", to=T.FLOAT),
        h.make_node("Cast", ["x"], ["u"], name="to_u8_output", to=T.UINT8),
    ]
    outs = [_vi("y", shape=(2, 3)), _vi("q", T.UINT8, (2, 3)), _vi("s", shape=()), _vi("z", T.UINT8, ()),
            _vi("u", T.UINT8, (2, 3))]  # fmt: skip
    found = _by_node(check_model(_model(nodes, [_vi("x", shape=(2, 3))], outs)))
    assert "not supported" in found["dql"].reason
    assert "output mid is UINT8" in found["to_u8_inside"].reason
    assert "to_u8_output" not in found and "back" not in found


def test_cli_auto_falls_back_to_the_table_when_the_parser_cannot_start(monkeypatch, tmp_path):
    """FAKE TensorRT whose Builder fails as on a machine without a GPU: auto -> table, yes -> exit 2."""
    from click.testing import CliRunner

    from trtq.surgery.cli import main

    fake = _fake_tensorrt(True)

    def no_gpu(self, logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    fake.Builder.__init__ = no_gpu
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    nodes = [h.make_node("Relu", ["x"], ["y"], name="relu")]
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, [_vi("x")], [_vi("y")]), str(path))
    res = CliRunner().invoke(main, ["check", str(path)])
    assert res.exit_code == 0 and "built-in support table only" in res.output
    res = CliRunner().invoke(main, ["check", str(path), "--tensorrt", "yes"])
    assert res.exit_code == 2 and "cannot create its ONNX parser" in res.output
