"""Cross-layer equalisation (:mod:`trtq.precision.equalize`): the FP32 function is unchanged, the
two weight ranges of every channel meet at their geometric mean, and only positive-homogeneous
pairs are touched. Synthetic graphs against the definition, then PP-OCRv4 det on a real page."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from trtq.precision.equalize import equalize, find_pairs

RNG = np.random.default_rng(7)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


def _conv(name: str, x: str, y: str, cin: int, cout: int, group: int = 1, spread: float = 1.0):
    """A 3x3 Conv whose output channels' weight ranges span ``spread`` decades, with a bias."""
    w = RNG.standard_normal((cout, cin // group, 3, 3)) * 10 ** RNG.uniform(-spread, spread, (cout, 1, 1, 1))
    b = RNG.standard_normal(cout)
    inits = [
        numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
        numpy_helper.from_array(b.astype(np.float32), f"{name}.b"),
    ]
    node = helper.make_node(
        "Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, pads=[1, 1, 1, 1], group=group
    )
    return node, inits


def _model(nodes_inits, outputs: list[str]) -> onnx.ModelProto:
    nodes = [n for n, _ in nodes_inits]
    inits = [i for _, ii in nodes_inits for i in ii]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _ranges(model: onnx.ModelProto, conv1: str, conv2: str) -> tuple[np.ndarray, np.ndarray]:
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = {n.name: n for n in model.graph.node}
    w1, w2 = w[node[conv1].input[1]], w[node[conv2].input[1]]
    group = next((a.i for a in node[conv2].attribute if a.name == "group"), 1)
    cin_g = w2.shape[1]
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    r2 = np.abs(w2.reshape(group, -1, cin_g, w2.shape[2] * w2.shape[3])).max(axis=(1, 3)).reshape(-1)
    return r1, r2


@pytest.mark.parametrize("group2", [1, 8])  # a dense and a depthwise (x2) second convolution
def test_a_relu_pair_keeps_its_function_and_meets_at_the_geometric_mean(group2):
    m = _model(
        [
            _conv("c1", "x", "a", 3, 8, spread=2.0),
            (helper.make_node("Relu", ["a"], ["r"], name="relu"), []),
            _conv("c2", "r", "y", 8, 16, group=group2),
        ],
        ["y"],
    )
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    r1, r2 = _ranges(m, "c1", "c2")
    out, result = equalize(m)
    assert [(p.conv1, p.conv2, p.between) for p in result.pairs] == [("c1", "c2", "r")]
    q1, q2 = _ranges(out, "c1", "c2")
    np.testing.assert_allclose(q1, np.sqrt(r1 * r2), rtol=1e-5)  # both ranges become sqrt(r1 r2)
    np.testing.assert_allclose(q2, np.sqrt(r1 * r2), rtol=1e-5)
    assert q1.max() / q1.min() < r1.max() / r1.min() / 10  # the spread across channels shrank
    (want,), (got,) = _run(m, x), _run(out, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_only_positive_homogeneous_single_reader_pairs_are_touched():
    """Clip (ReLU6) ends a pair; a tensor read twice, or a graph output, ends one too."""
    m = _model(
        [
            _conv("c1", "x", "a", 3, 8),
            (helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="relu6"), []),
            _conv("c2", "r", "b", 8, 8),
            _conv("c3", "b", "c", 8, 8),  # b is read by c3 and is a graph output
            (helper.make_node("Relu", ["c"], ["d"], name="relu"), []),
            _conv("c4", "d", "e", 8, 8),  # the one pair: c3 -> relu -> c4
            _conv("c5", "e", "y", 8, 4),
            (helper.make_node("Relu", ["e"], ["y2"], name="relu2"), []),  # e read twice
        ],
        ["b", "y", "y2"],
    )
    m.graph.initializer.extend(
        [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    )
    assert [(c1.name, c2.name) for c1, _, c2 in find_pairs(m)] == [("c3", "c4")]
    out, result = equalize(m)
    assert [p.conv1 for p in result.pairs] == ["c3"]
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for want, got in zip(_run(m, x), _run(out, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    before = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    for name in ("c1.w", "c2.w", "c5.w"):  # outside the pair: untouched
        np.testing.assert_array_equal(after[name], before[name])


def test_det_keeps_its_text_map_and_the_cli_writes_the_model(real_models, tmp_path):
    import documents

    from trtq._core.onnx_model import load_onnx
    from trtq.datasets.preprocess import PreprocessSpec, to_sample
    from trtq.precision.cli import main

    page = documents.document_images(1, seed=3, real=False)[0]
    x = to_sample(page, 640, 640, "NCHW", np.float32, PreprocessSpec.preset("paddleocr"))[None]
    out_path = tmp_path / "det.eq.onnx"
    r = CliRunner().invoke(
        main,
        ["equalize", str(real_models["det"]), "-o", str(out_path), "--json", str(tmp_path / "eq.json"), "-q"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "eq.json").read_text())
    assert doc["kind"] == "equalize" and doc["created_by"] == "precision equalize"
    assert doc["count"] == len(doc["pairs"]) >= 10  # PP-OCRv4 det: 15
    assert any(p["scale_max"] / p["scale_min"] > 10 for p in doc["pairs"])  # channels really moved
    (want,), (got,) = _run(load_onnx(real_models["det"]), x), _run(load_onnx(out_path), x)
    assert (want > 0.3).mean() > 0.01  # the page has text
    assert float(np.abs(got - want).max()) < 1e-3

    r = CliRunner().invoke(main, ["equalize", str(real_models["det"])])
    assert r.exit_code == 2 and "-o" in r.output and len(r.output.strip().splitlines()) == 1
