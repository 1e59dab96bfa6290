"""Which tensors mark-all marks and which layers pins reach, on a named fake of TensorRT's
network objects (``FakeTrt``). Only the attributes the real code uses are faked; that each of
them exists in the real bindings is checked by test_api_conformance.py (AST walk)."""

from __future__ import annotations

import enum
import logging
from types import SimpleNamespace

from trtq.runtime.tensorrt_network import mark_outputs, markable_tensors, pin_layers

LayerType = enum.Enum(
    "LayerType",
    "CONVOLUTION ACTIVATION CONSTANT SHAPE SHUFFLE TRIP_LIMIT RECURRENCE ITERATOR LOOP_OUTPUT "
    "CONDITION CONDITIONAL_INPUT CONDITIONAL_OUTPUT ELEMENTWISE",
)
DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT32 INT64 BOOL")
FakeTrt = SimpleNamespace(LayerType=LayerType, DataType=DataType, float32=DataType.FLOAT)


class FakeTensor(SimpleNamespace):
    pass


class FakeLayer:
    def __init__(self, name, ltype, outputs):
        self.name, self.type, self._outputs = name, ltype, outputs
        self.precision = None
        self.output_types = {}

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, i):
        return self._outputs[i]

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


def _t(name, dtype=DataType.FLOAT, *, inp=False, out=False, shape=False):
    return FakeTensor(
        name=name, dtype=dtype, is_network_input=inp, is_network_output=out, is_shape_tensor=shape
    )


class FakeNetwork:
    def __init__(self, layers):
        self.layers = layers
        self.marked = []

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]

    def mark_output(self, tensor):
        self.marked.append(tensor.name)


def _network():
    return FakeNetwork(
        [
            FakeLayer("w", LayerType.CONSTANT, [_t("w_out")]),
            FakeLayer("conv", LayerType.CONVOLUTION, [_t("conv_out")]),
            FakeLayer("conv_1", LayerType.ACTIVATION, [_t("relu_out")]),
            FakeLayer("shape", LayerType.SHAPE, [_t("shape_out", DataType.INT64, shape=True)]),
            FakeLayer("trip", LayerType.TRIP_LIMIT, [_t("trip_out", DataType.INT32)]),
            FakeLayer("body", LayerType.ELEMENTWISE, [_t("body_out")]),
            FakeLayer("loop_out", LayerType.LOOP_OUTPUT, [_t("loop_res")]),
            FakeLayer("half", LayerType.ACTIVATION, [_t("half_out", DataType.HALF)]),
            FakeLayer("cast", LayerType.SHUFFLE, [_t("idx", DataType.INT32)]),
            FakeLayer("head", LayerType.ACTIVATION, [_t("y", out=True)]),
        ]
    )


def test_mark_all_skips_what_tensorrt_cannot_mark():
    result = markable_tensors(FakeTrt, _network())
    assert result.marked == ["conv_out", "relu_out", "loop_res", "half_out"]
    assert result.skipped == {
        "w_out": "constant or shape layer",
        "shape_out": "shape tensor",
        "trip_out": "inside a loop or conditional body",
        "body_out": "inside a loop or conditional body",
        "idx": "not a float tensor",
        "y": "already an output",
    }


def test_mark_some_marks_them_and_refuses_unmarkable_ones():
    net = _network()
    assert mark_outputs(FakeTrt, net, ["relu_out", "y"]).marked == ["relu_out"]
    assert net.marked == ["relu_out"]
    try:
        mark_outputs(FakeTrt, _network(), ["body_out"])
    except Exception as exc:  # InputError
        assert "cannot mark tensor 'body_out' as an output: inside a loop or conditional body" in str(exc)
    else:
        raise AssertionError("expected an error")


def test_pins_reach_every_layer_of_the_node_and_skip_integer_layers(caplog):
    net = _network()
    node_outputs = {"conv": ["conv_out"], "cast": ["idx"], "gone": ["folded"]}
    with caplog.at_level(logging.WARNING):
        pinned = pin_layers(FakeTrt, net, ["conv", "cast", "gone"], node_outputs)
    assert pinned == ["conv", "conv_1"]  # conv_1: a second layer made from node "conv"
    layers = {layer.name: layer for layer in net.layers}
    assert layers["conv"].precision == DataType.FLOAT and layers["conv"].output_types == {0: DataType.FLOAT}
    assert layers["cast"].precision is None  # an integer layer has no float precision to pin
    assert layers["head"].precision is None
    assert "pin 'gone' matches no TensorRT layer" in caplog.text
    assert "pin 'cast'" in caplog.text
