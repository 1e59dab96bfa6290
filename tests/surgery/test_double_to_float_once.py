"""double_to_float converts the whole graph once: a DOUBLE graph input read by several DOUBLE
nodes gets exactly one Cast, and a DOUBLE initializer shared by several nodes one FLOAT copy."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from trtq.surgery.fix import fix_model
from trtq.surgery.rule import make_rules
from trtq.surgery.verify import verify_models


def _model():
    nodes = [
        h.make_node("Mul", ["x", "k"], ["a"], name="mul0"),
        h.make_node("Add", ["x", "k"], ["b"], name="add1"),
        h.make_node("Sub", ["x", "a"], ["c"], name="sub2"),
        h.make_node("Mul", ["x", "b"], ["d"], name="mul3"),
        h.make_node("Add", ["c", "d"], ["y"], name="add4"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.DOUBLE, [2, 3])],
        [h.make_tensor_value_info("y", T.DOUBLE, [2, 3])],
        [nh.from_array(np.array(0.5, np.float64), "k")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_double_input_with_several_consumers_gets_one_cast():
    model = _model()
    result = fix_model(model, make_rules(["double_to_float"]))
    g = result.model.graph
    casts_of_x = [n for n in g.node if n.op_type == "Cast" and list(n.input) == ["x"]]
    assert len(casts_of_x) == 1
    assert sum(n.op_type == "Cast" for n in g.node) == 2  # x in, y out
    assert [i.name for i in g.initializer] == ["k_float"]
    assert g.initializer[0].data_type == T.FLOAT
    assert verify_models(model, result.model, trials=2).ok
    assert list(g.initializer[0].dims) == []  # a scalar stays a scalar
