"""Transformer Q/DQ placement, per pattern: Q/DQ on the projection and FFN MatMul inputs; a
residual Add quantized on its branch (non-residual) input only, never on the residual stream;
LayerNorm and Softmax inputs never; the attention products only with ``mha="int8"``. CNN
placement unchanged. The same rule in the export and in calib's ``find_consumers``.
Expected edges are written from the block's construction (node name, input position)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from precision_tiny_models import minmax_amax, run_ort
from transformer_tiny_blocks import block_inputs, encoder_block

from trtq._core.errors import InputError
from trtq.calib.auto import find_consumers
from trtq.precision.emulate import EmulationConfig, apply_plan, plan_emulation
from trtq.precision.export import export_qdq

LINEAR_INPUTS = {
    ("q/matmul", 0),
    ("k/matmul", 0),
    ("v/matmul", 0),
    ("o/matmul", 0),
    ("fc1/matmul", 0),
    ("fc2/matmul", 0),
}
BRANCHES = {("add1", 0), ("add2", 1)}  # o.out and fc2.out: the non-residual inputs
ATTENTION_PRODUCTS = {("bmm1", 0), ("bmm1", 1), ("bmm2", 0), ("bmm2", 1)}


@pytest.fixture(scope="module")
def calibrated():
    rs = np.random.RandomState(3)
    out = {}
    for kw in ({}, {"ln2": "op", "gelu": "tanh"}):
        model = encoder_block(**kw)
        out[tuple(sorted(kw.items()))] = (model, minmax_amax(model, [block_inputs(rs) for _ in range(4)]))
    return out


def _edges(plan) -> set[tuple[str, int]]:
    names = plan.graph.node_names
    return {(names[n], pos) for lp in plan.layers for n, pos in lp.quant_edges}


@pytest.mark.parametrize("variant", [(), (("gelu", "tanh"), ("ln2", "op"))])
def test_explicit_default_quantizes_linears_and_branches_only(calibrated, variant):
    model, amax = calibrated[variant]
    plan = plan_emulation(model, EmulationConfig("int8"), amax)
    assert _edges(plan) == LINEAR_INPUTS | BRANCHES
    assert plan.config.mha == "fp16"


def test_mha_int8_adds_q_k_probabilities_and_v(calibrated):
    model, amax = calibrated[()]
    plan = plan_emulation(model, EmulationConfig("int8", mha="int8"), amax)
    assert _edges(plan) == LINEAR_INPUTS | BRANCHES | ATTENTION_PRODUCTS


def test_implicit_keeps_pattern_rules_and_quantizes_the_other_edges(calibrated):
    model, amax = calibrated[()]
    edges = _edges(plan_emulation(model, EmulationConfig("int8", "implicit"), amax))
    # Pessimistic elsewhere (Reshape/Transpose inputs too) ...
    assert LINEAR_INPUTS <= edges and ("q/split", 0) in edges and ("ctx/t", 0) in edges
    # ... but the patterns' rules hold: no LN input, no attention product, no residual stream.
    touched = {n for n, _ in edges}
    assert not touched & {"ln1/mean", "ln1/sub", "ln2/mean", "ln2/sub", "softmax", "bmm1", "bmm2"}
    assert ("add1", 1) not in edges and ("add2", 0) not in edges
    assert not edges & BRANCHES  # TensorRT 10 fuses the Add into the GEMM epilogue: no Q/DQ inside


def test_unknown_mha_is_one_clear_error():
    with pytest.raises(InputError, match="--mha"):
        EmulationConfig("int8", mha="fp8")


def test_cnn_placement_is_unchanged(two_conv, rng):
    amax = minmax_amax(two_conv, [{"x": rng.randn(1, 3, 6, 6).astype(np.float32)} for _ in range(2)])
    for placement in ("explicit", "implicit"):
        for mha in ("fp16", "int8"):
            plan = plan_emulation(two_conv, EmulationConfig("int8", placement, mha=mha), amax)
            # conv inputs, and the residual (outside) input r1 of the Add fused into conv2
            assert _edges(plan) == {("conv1", 0), ("conv2", 0), ("add", 1)}


@pytest.mark.parametrize("mha", ["fp16", "int8"])
def test_export_places_qdq_where_the_plan_does_and_matches_the_emulation(calibrated, mha):
    model, amax = calibrated[()]
    plan = plan_emulation(model, EmulationConfig("int8", mha=mha), amax)
    qdq = export_qdq(model, amax, mha=mha)
    producer = {o: n for n in qdq.graph.node for o in n.output}
    fed = set()
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for pos, t in enumerate(node.input):
            dq = producer.get(t)
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in producer:
                if producer[dq.input[0]].op_type == "QuantizeLinear":
                    fed.add((node.name, pos))
    assert fed == _edges(plan)
    feeds = block_inputs(np.random.RandomState(9))
    emulated = run_ort(apply_plan(plan), feeds)["y"]
    exported = run_ort(qdq, feeds)["y"]
    np.testing.assert_allclose(exported, emulated, rtol=1e-5, atol=1e-5)
    assert np.abs(exported - run_ort(model, feeds)["y"]).max() > 1e-4  # quantization did something


@pytest.mark.parametrize("mha", ["fp16", "int8"])
def test_calib_find_consumers_states_the_same_rule(calibrated, mha):
    model, amax = calibrated[()]
    plan = plan_emulation(model, EmulationConfig("int8", mha=mha), amax)
    nodes = {n.name: n for n in model.graph.node}
    quantized = {nodes[name].input[pos] for name, pos in _edges(plan)}
    assert set(find_consumers(model, mha=mha)) == quantized


def test_export_of_the_layernormalization_block_passes_the_checker(calibrated):
    model, amax = calibrated[(("gelu", "tanh"), ("ln2", "op"))]
    qdq = export_qdq(model, amax)
    onnx.checker.check_model(qdq)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "r1" for n in qdq.graph.node)
