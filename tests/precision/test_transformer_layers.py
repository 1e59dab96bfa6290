"""Transformer layer groupings: a decomposed LayerNorm and a LayerNormalization op are one
normalization layer each; the attention block MatMul -> scale -> mask Add -> Softmax -> MatMul is
one layer holding its probabilities inside; both GELU forms are point-wise epilogues of fc1.
Expectations are written from the block's construction (node names), not from the code."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from precision_tiny_models import make_model, vi
from transformer_tiny_blocks import ATTENTION_NODES, LN1_NODES, D, S, encoder_block

from trtq._core.transformer_patterns import find_attention, find_layernorms
from trtq.precision.emulate import EmulationConfig, folded, plan_emulation
from trtq.precision.emulation_fusion import find_layers


def _layers_by_name(model: onnx.ModelProto) -> dict[frozenset[str], object]:
    lg = find_layers(folded(model))
    return {frozenset(lg.node_names[n] for n in ly.nodes): ly for ly in lg.layers}


def _layer_with(model: onnx.ModelProto, node: str):
    lg = find_layers(folded(model))
    return next(ly for ly in lg.layers if node in {lg.node_names[n] for n in ly.nodes}), lg


def test_decomposed_layernorm_is_one_layer_with_its_intermediates_inside():
    model = encoder_block()
    layer, lg = _layer_with(model, "ln1/mean")
    assert layer.kind == "layernorm"
    assert {lg.node_names[n] for n in layer.nodes} == set(LN1_NODES)
    assert layer.inputs == ("x",) and layer.outputs == ("ln1.out",)
    produced = {o for n in folded(model).graph.node if n.name in LN1_NODES for o in n.output}
    assert layer.internal == frozenset(produced - {"ln1.out"})  # Pow, ReduceMean_1... never boundaries
    assert not layer.stored


def test_layernormalization_op_is_one_normalization_layer():
    layer, lg = _layer_with(encoder_block(ln2="op"), "ln2")
    assert layer.kind == "layernorm" and [lg.node_names[n] for n in layer.nodes] == ["ln2"]
    assert layer.outputs == ("ln2.out",)


@pytest.mark.parametrize("scale_at", ["scores", "q"])
def test_attention_is_one_layer_holding_the_probabilities(scale_at):
    model = encoder_block(scale_at=scale_at)
    layer, lg = _layer_with(model, "softmax")
    names = {lg.node_names[n] for n in layer.nodes}
    # A scale on q before the first MatMul stays an ordinary point-wise layer outside.
    want = set(ATTENTION_NODES) - ({"scale"} if scale_at == "q" else set())
    assert layer.kind == "attention" and names == want
    assert lg.node_names[layer.anchor] == "bmm1"
    assert layer.outputs == ("ctx",)
    assert layer.stored == frozenset({"probs"}) and "probs" in layer.internal and "scores" in layer.internal
    q = "q.s" if scale_at == "q" else "q.t"
    assert set(layer.inputs) == {q, "k.t", "mask", "v.t"}


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_gelu_forms_fuse_pointwise_into_fc1(gelu):
    model = encoder_block(gelu=gelu)
    layer, lg = _layer_with(model, "fc1/matmul")
    gelu_nodes = {n.name for n in model.graph.node if n.name.startswith("gelu/")}
    assert {lg.node_names[n] for n in layer.nodes} == {"fc1/matmul", "fc1/bias"} | gelu_nodes
    assert layer.kind == "" and layer.outputs == ("gelu.out",)


def test_residual_adds_fuse_into_their_projection():
    model = encoder_block()
    layers = _layers_by_name(model)
    assert frozenset({"o/matmul", "o/bias", "add1"}) in layers
    assert frozenset({"fc2/matmul", "fc2/bias", "add2"}) in layers


def test_a_layernorm_whose_intermediate_is_read_outside_is_not_grouped():
    # The centred value d also feeds an output: not one kernel, so the nodes stay separate layers.
    model = encoder_block()
    g = model.graph
    g.output.append(vi("ln1.d", [1, S, D]))
    assert not [p for p in find_layernorms(g) if g.node[p.nodes[0]].name == "ln1/mean"]
    layer, _ = _layer_with(model, "ln1/mean")
    assert layer.kind == ""


def test_softmax_without_a_second_matmul_is_not_attention():
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["s"], name="mm"),
        helper.make_node("Softmax", ["s"], ["y"], name="sm", axis=-1),
    ]
    model = make_model(nodes, [vi("a", [1, 4, 3]), vi("b", [1, 3, 4])], [vi("y", [1, 4, 4])], {})
    assert find_attention(model.graph) == []
    assert all(ly.kind == "" for ly in find_layers(model).layers)


def test_a_pin_on_any_node_of_a_pattern_keeps_the_whole_layer_fp32():
    model = encoder_block()
    amax = {t: 4.0 for t in ("x", "ln1.out", "ctx.m", "ln2.out", "gelu.out", "o.mm", "fc2.mm")}
    plan = plan_emulation(model, EmulationConfig("fp16", pins=frozenset({"ln1/pow"})), amax)
    by_node = {plan.graph.node_names[n]: lp for lp in plan.layers for n in lp.layer.nodes}
    assert all(by_node[n].pinned for n in LN1_NODES)
    assert not by_node["ln2/pow"].pinned and by_node["ln2/pow"].fp16


def test_cnn_layers_carry_no_pattern_kind(two_conv, conv_relu):
    for m in (two_conv, conv_relu):
        assert all(ly.kind == "" and not ly.stored for ly in find_layers(folded(m)).layers)


def test_patterns_are_found_on_the_unfolded_model_too():
    # calib's find_consumers sees the model as calibrated (not folded): same patterns.
    model = encoder_block()
    assert len(find_layernorms(model.graph)) == 2 and len(find_attention(model.graph)) == 1
    assert np.all([p.decomposed for p in find_layernorms(model.graph)])
