"""The one home of the ONNX facts (trtq._core.onnx_model, onnx_fold, tensors): node names, real
inputs, the tensor metadata type, constant folding and the metadata-keeping export."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from trtq._core.onnx_fold import NEVER_FOLD, fold_constants
from trtq._core.onnx_model import (
    ensure_node_names,
    export_graph,
    float_tensors,
    keep_metadata,
    model_summary,
    node_names,
    real_inputs,
    tensor_readers,
    without_initializers,
)
from trtq._core.tensors import Producer, TensorInfo
from trtq.precision.fold import fold_model
from trtq.precision.pins import check_nodes_exist

F32 = np.dtype(np.float32)


def _model(nodes, inputs, outputs, inits=(), opset=17, **kw) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], **kw)


def _vi(name: str, shape, elem=TensorProto.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


# -- node names ---------------------------------------------------------------------------------


def _colliding() -> onnx.ModelProto:
    """Node 0 is an unnamed Relu (would be ``Relu_0``), node 1 is already called ``Relu_0``."""
    nodes = [
        h.make_node("Relu", ["x"], ["a"]),
        h.make_node("Relu", ["a"], ["b"], name="Relu_0"),
        h.make_node("Sigmoid", ["b"], ["c"]),
        h.make_node("Relu", ["c"], ["y"], name="Sigmoid_2"),
    ]
    return _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])


def test_node_names_keep_names_and_number_unnamed_nodes_by_index():
    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["y"], name="last")]
    assert node_names(_model(nodes, [_vi("x", [1])], [_vi("y", [1])])) == ["Relu_0", "last"]


def test_node_names_avoid_a_name_already_taken():
    names = node_names(_colliding())
    assert names == ["Relu_0_", "Relu_0", "Sigmoid_2_", "Sigmoid_2"]
    assert len(set(names)) == len(names)


def test_every_user_of_node_names_agrees_on_colliding_names():
    model = _colliding()
    names = node_names(model)
    # float activations name their producer the same way
    producers = {t.name: t.producer.node for t in float_tensors(model) if t.producer}
    assert producers == {"a": names[0], "b": names[1], "c": names[2], "y": names[3]}
    # surgery writes the same names into the model
    named = ensure_node_names(onnx.ModelProto.FromString(model.SerializeToString()))
    assert [n.name for n in named.graph.node] == names
    # pins accept them
    check_nodes_exist(model, ["Relu_0_", "Sigmoid_2_"])


def test_node_names_of_a_subgraph_or_a_node_list():
    nodes = [h.make_node("Relu", ["x"], ["y"])]
    graph = h.make_graph(nodes, "body", [_vi("x", [1])], [_vi("y", [1])])
    assert node_names(graph) == node_names(graph.node) == ["Relu_0"]


# -- real inputs and the tensor metadata type --------------------------------------------------


def test_tensor_readers_lists_every_read_by_node_position():
    # x -> Mul(x, x) = sq; Clip(sq, "", hi) = c (min omitted); Add(c, x) = y; sq and hi read once
    nodes = [
        h.make_node("Mul", ["x", "x"], ["sq"]),
        h.make_node("Clip", ["sq", "", "hi"], ["c"]),
        h.make_node("Add", ["c", "x"], ["y"]),
    ]
    model = _model(nodes, [_vi("x", [2])], [_vi("y", [2])], [nh.from_array(np.array(1, np.float32), "hi")])
    expected = {"x": [0, 0, 2], "sq": [1], "hi": [1], "c": [2]}
    assert tensor_readers(model) == expected
    assert tensor_readers(model.graph) == expected  # no "" (omitted input), no "y" (read by nothing)


def test_real_inputs_leave_out_initializers_listed_as_inputs():
    """Old exporters (IR < 4) list every initializer as a graph input too."""
    w = nh.from_array(np.ones((4, 4), np.float32), "w")
    model = _model(
        [h.make_node("MatMul", ["x", "w"], ["y"])],
        [_vi("x", ["N", 4]), _vi("w", [4, 4])],
        [_vi("y", ["N", 4])],
        [w],
        ir_version=3,
    )
    assert real_inputs(model) == [TensorInfo("x", ("N", 4), F32)]
    assert [t.name for t in float_tensors(model)] == ["x", "y"]
    assert model_summary(model)["inputs"] == [{"name": "x", "shape": [-1, 4], "dtype": "float32"}]


def test_tensor_info_normalises_and_describes_shapes():
    info = TensorInfo("x", (np.int64(2), 3), np.float16)
    assert info == TensorInfo("x", (2, 3), np.dtype(np.float16))
    assert type(info.shape[0]) is int and info.dtype == np.float16
    assert not info.is_dynamic and info.sample_shape == (3,) and info.nbytes == 12
    assert TensorInfo("x", (-1, 3)).is_dynamic and TensorInfo("x", ("N", 3)).is_dynamic
    assert TensorInfo("t").is_dynamic  # unknown shape
    with pytest.raises(ValueError, match="static"):
        _ = TensorInfo("x", (None, 3)).nbytes
    at = Producer("conv", "Conv", 3)
    assert TensorInfo("y", None, F32, at).producer == at


# -- constant folding ---------------------------------------------------------------------------


def _fold_fixture() -> onnx.ModelProto:
    """y = x * (c * 2) + RandomNormal: the Constant*Mul folds, the random draw must not."""
    c = h.make_tensor("cv", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    nodes = [
        h.make_node("Constant", [], ["c"], value=c),
        h.make_node("Mul", ["c", "two"], ["k"]),
        h.make_node("Mul", ["x", "k"], ["xk"]),
        h.make_node("RandomNormal", [], ["noise"], shape=[1, 4], seed=1.0),
        h.make_node("Add", ["xk", "noise"], ["y"]),
    ]
    two = nh.from_array(np.array(2.0, np.float32), "two")
    return _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])], [two])


def test_fold_folds_constant_mul_and_keeps_random_ops():
    folded = fold_model(_fold_fixture())
    ops = [n.op_type for n in folded.graph.node]
    assert "RandomNormal" in ops and "Constant" not in ops
    assert ops.count("Mul") == 1  # the Constant * 2 became an initializer
    inits = {i.name: nh.to_array(i) for i in folded.graph.initializer}
    assert any(np.array_equal(v, [2.0, 4.0, 6.0, 8.0]) for v in inits.values())


def test_surgery_fold_uses_the_same_pass_and_exclusions():
    graph = fold_constants(gs.import_onnx(_fold_fixture()))
    assert sorted(n.op for n in graph.nodes) == ["Add", "Mul", "RandomNormal"]
    assert {"RandomNormal", "RandomUniformLike", "DequantizeLinear", "QuantizeLinear", "Loop"} <= NEVER_FOLD


def test_folding_a_large_constant_prints_nothing(capfd):
    """onnx-graphsurgeon's logger printed its advice on large folded outputs (and a note on the
    missing 'colored' module) to stdout, even with -q; trtq folds them on purpose."""
    big = nh.from_array(np.ones((600, 600), np.float32), "big")  # 1.4 MB once transposed
    nodes = [h.make_node("Transpose", ["big"], ["bt"]), h.make_node("MatMul", ["x", "bt"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 600])], [_vi("y", [1, 600])], [big])
    assert [n.op_type for n in fold_model(model).graph.node] == ["MatMul"]
    out, err = capfd.readouterr()
    assert "[W]" not in out + err and "large outputs" not in out + err, out + err


def test_fold_keeps_a_weight_dequantize():
    """Q/DQ stay: TensorRT builds INT8 kernels from the INT8 weight behind a DequantizeLinear."""
    w = nh.from_array(np.ones((4, 4), np.int8), "w")
    scale = nh.from_array(np.array(0.5, np.float32), "s")
    nodes = [h.make_node("DequantizeLinear", ["w", "s"], ["wf"]), h.make_node("MatMul", ["x", "wf"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])], [w, scale])
    assert [n.op_type for n in fold_model(model).graph.node] == ["DequantizeLinear", "MatMul"]


# -- keeping metadata ---------------------------------------------------------------------------


def _with_metadata() -> onnx.ModelProto:
    nodes = [h.make_node("Relu", ["x"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])], ir_version=8, producer_name="exporter")
    model.opset_import.append(h.make_opsetid("com.example", 2))
    model.producer_version = "1.2"
    model.doc_string = "doc"
    model.metadata_props.add(key="author", value="me")
    return model


def _metadata(m: onnx.ModelProto) -> tuple:
    opsets = sorted((o.domain, o.version) for o in m.opset_import)
    return (
        m.ir_version,
        m.producer_name,
        m.producer_version,
        m.doc_string,
        opsets,
        dict((p.key, p.value) for p in m.metadata_props),
    )


def test_without_initializers_copies_everything_else():
    src = _with_metadata()
    src.graph.node.append(h.make_node("Add", ["y", "b"], ["z"], name="add"))
    src.graph.initializer.append(nh.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "b"))
    src.graph.value_info.append(_vi("z", [1, 4]))
    src.graph.doc_string = "graph doc"
    before = src.SerializeToString()
    out = without_initializers(src)
    assert len(out.graph.initializer) == 0 and src.SerializeToString() == before
    out.graph.initializer.extend(src.graph.initializer)
    assert out == src


def test_export_graph_keeps_the_source_metadata():
    src = _with_metadata()
    out = export_graph(gs.import_onnx(src), src)
    assert _metadata(out) == _metadata(src)
    ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])


def test_fold_keeps_the_source_metadata():
    src = _with_metadata()
    assert _metadata(fold_model(src)) == _metadata(src)


def test_keep_metadata_adds_domains_used_but_not_imported():
    src = _with_metadata()
    out = onnx.ModelProto()
    out.CopyFrom(src)
    out.graph.node.append(h.make_node("Plugin", ["y"], ["z"], domain="trt.plugins"))
    del out.opset_import[:]
    out.opset_import.append(h.make_opsetid("", 13))
    keep_metadata(out, src)
    assert sorted((o.domain, o.version) for o in out.opset_import) == [
        ("", 13),
        ("com.example", 2),
        ("trt.plugins", 1),
    ]
