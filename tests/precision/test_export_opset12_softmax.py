"""An opset-12 model raised to opset 13 for the Q/DQ export keeps its attention blocks.

ONNX's version converter wraps every Softmax it raises past opset 13 in Shape/Flatten/Reshape
(opset 13 changed the op's axis semantics). Around a last-axis Softmax that wrapper is a no-op,
and it hid the attention pattern ``MatMul -> Softmax -> MatMul`` from the export, which then
quantized Q, K, the probabilities and V although ``mha`` is ``fp16`` (PP-OCRv4 rec, opset 12:
59 quantized tensors instead of the emulation's 51)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from precision_tiny_models import make_model, minmax_amax, run_ort, vi
from transformer_tiny_blocks import block_inputs, encoder_block

from trtq.calib.auto import find_consumers
from trtq.precision.emulate import EmulationConfig, apply_plan, at_least_opset, plan_emulation
from trtq.precision.export import export_qdq


def _opset12_block() -> onnx.ModelProto:
    """The tiny encoder block of transformer_tiny_blocks at opset 12, its Softmax on axis 3 of the
    rank-4 scores (as paddle2onnx writes it), the heads reshaped to a shape computed at run time
    (a Slice with computed starts) so that ONNX shape inference loses the rank, as on PP-OCRv4 rec."""
    model = encoder_block()
    graph = model.graph
    for node in graph.node:
        if node.op_type == "Softmax":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("axis", 3))
        if node.op_type == "Reshape" and node.input[1] == "heads_shape":
            node.input[1] = "heads_rt"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([4], np.int64), "four"))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "zero_i"))
    shape_nodes = [
        helper.make_node("Shape", ["x"], ["sx"], name="rt/shape"),
        helper.make_node("Sub", ["sx", "sx"], ["sz"], name="rt/sub"),
        helper.make_node("Slice", ["sz", "zero_i", "four"], ["start"], name="rt/start"),  # [0, 0, 0]
        helper.make_node("ReduceMin", ["start"], ["start1"], name="rt/min", keepdims=1),  # [0]
        helper.make_node("Add", ["start1", "four"], ["end"], name="rt/end"),
        helper.make_node("Concat", ["heads_shape", "heads_shape"], ["hs2"], name="rt/concat", axis=0),
        helper.make_node("Slice", ["hs2", "start1", "end"], ["heads_rt"], name="rt/slice"),
    ]
    nodes = shape_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    model.opset_import[0].version = 12
    onnx.checker.check_model(model)
    return model


def _qdq_fed(qdq: onnx.ModelProto) -> set[str]:
    """Names of the tensors that pass through a QuantizeLinear -> DequantizeLinear pair."""
    return {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("mha", ["fp16", "int8"])
def test_opset12_export_quantizes_what_the_plan_and_auto_measure(mha):
    model = _opset12_block()
    rs = np.random.RandomState(5)
    amax = minmax_amax(model, [block_inputs(rs) for _ in range(4)])
    plan = plan_emulation(model, EmulationConfig("int8", mha=mha), amax)  # opset 12: not converted
    nodes = plan.model.graph.node
    planned = {nodes[n].input[pos] for lp in plan.layers for n, pos in lp.quant_edges}
    qdq = export_qdq(model, amax, mha=mha)
    assert qdq.opset_import[0].version == 13
    assert _qdq_fed(qdq) == planned
    assert set(find_consumers(model, mha=mha)) == planned
    products = {"q.t", "k.t", "probs", "v.t"}
    assert (products <= planned) == (mha == "int8")
    assert not products & planned or mha == "int8"
    feeds = block_inputs(np.random.RandomState(9))
    np.testing.assert_allclose(
        run_ort(qdq, feeds)["y"], run_ort(apply_plan(plan), feeds)["y"], rtol=1e-5, atol=1e-5
    )


def _softmax_model(axis: int, computed_reshape: bool, then_transpose: bool) -> onnx.ModelProto:
    """x [2, 3, 4, 5] -> (Reshape to Shape(x): a shape ONNX inference cannot follow) ->
    (Transpose) -> Softmax(axis) -> y, at opset 12."""
    nodes, t = [], "x"
    if computed_reshape:
        nodes += [
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
        ]
        t = "r"
    if then_transpose:
        nodes.append(helper.make_node("Transpose", [t], ["t"], name="transpose", perm=[0, 2, 1, 3]))
        t = "t"
    nodes.append(helper.make_node("Softmax", [t], ["y"], name="softmax", axis=axis))
    out = [2, 4, 3, 5] if then_transpose else [2, 3, 4, 5]
    return make_model(nodes, [vi("x", [2, 3, 4, 5])], [vi("y", out)], {}, opset=12)


@pytest.mark.parametrize(
    ("axis", "computed_reshape", "then_transpose", "unwrapped"),
    [
        (-1, True, False, True),  # the last axis by name: no rank needed
        (3, False, False, True),  # rank 4 from shape inference
        (3, True, True, True),  # rank from the Transpose's perm after a shape inference loses it
        (3, True, False, False),  # rank unknown: the converter's wrapper stays
        (1, False, False, False),  # not the last axis: opset 12 normalises over axes 1..3 together
        (2, False, True, False),
    ],
)
def test_raising_to_opset13_unwraps_only_last_axis_softmax(axis, computed_reshape, then_transpose, unwrapped):
    model = _softmax_model(axis, computed_reshape, then_transpose)
    raised = at_least_opset(model, 13)
    ops = [n.op_type for n in raised.graph.node]
    assert ("Flatten" not in ops) == unwrapped
    assert ops.count("Softmax") == 1
    softmax = next(n for n in raised.graph.node if n.op_type == "Softmax")
    assert softmax.name == "softmax" and (softmax.output[0] == "y") == unwrapped
    x = np.random.RandomState(0).randn(2, 3, 4, 5).astype(np.float32)
    # independent reference: opset-12 Softmax = softmax over the flattened axes axis..end
    t = x.transpose(0, 2, 1, 3) if then_transpose else x
    a = axis % 4
    flat = t.reshape(int(np.prod(t.shape[:a])), -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)).reshape(t.shape)
    np.testing.assert_allclose(run_ort(raised, {"x": x})["y"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_ort(model, {"x": x})["y"], expected, rtol=1e-5, atol=1e-6)
