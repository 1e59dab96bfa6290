"""FP8 export of the real PP-OCRv4 det (DESIGN.md section 6) on real images: which convolutions
run in FP8 (computed here from each node's own weights and attributes), per-channel weight scales
on the eight E4M3 grids, never a worse rounding than max|W_c| / 448, and the held-out text map
close to FP32's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from trtq.calib.run import calibrate
from trtq.datasets.preprocess import PreprocessSpec, to_sample
from trtq.precision import qdq
from trtq.precision.export import export_qdq

SIZE = 320


def _batch(path: Path) -> dict[str, np.ndarray]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return {"x": to_sample(img, SIZE, SIZE, "NCHW", np.float32, PreprocessSpec.preset("paddleocr"))[None]}


def _maps(model: onnx.ModelProto, batches) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, b)[0].ravel() for b in batches]).astype(np.float64)


@pytest.fixture(scope="module")
def det_fp8(real_models, image_dir):
    model = onnx.load(str(real_models["det"]))
    cal = [_batch(image_dir / n) for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    held = [_batch(image_dir / n) for n in ("page.png", "text.png")]
    amax = calibrate(model, cal, method="minmax").amax
    return model, export_qdq(model, amax, fp8=True), held


def test_fp8_convolutions_are_the_ones_tensorrt_runs_in_fp8(det_fp8):
    _, q, _ = det_fp8
    produced = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}

    def weight(node: onnx.NodeProto) -> onnx.TensorProto:
        src = produced.get(node.input[1])
        return inits[src.input[0] if src is not None and src.op_type == "DequantizeLinear" else node.input[1]]

    expected, fp8, convs = set(), set(), 0
    for node in q.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        convs += 1
        src = produced.get(node.input[0])
        if src is not None and src.op_type == "DequantizeLinear":
            fp8.add(node.name)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        dims = list(weight(node).dims)
        if (
            node.op_type == "Conv"
            and attrs.get("group", 1) == 1
            and min(dims[:2]) > 16
            and int(np.prod(attrs.get("kernel_shape", dims[2:]))) <= 32
        ):
            expected.add(node.name)
    assert fp8 == expected
    assert 0 < len(fp8) < convs  # some run in FP8, the depthwise/narrow/deconv ones stay float


def test_fp8_weights_per_channel_with_each_channel_max_in_the_top_binade(det_fp8):
    """Every FP8 weight of the exported det: one scale per output channel (axis 0), and each
    channel's largest stored code within E4M3's top binade (the grids span 448 down to 244)."""
    _, q, _ = det_fp8
    inits = {i.name: i for i in q.graph.initializer}
    checked = 0
    for dq in (n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        w8 = inits[dq.input[0]]
        if w8.data_type != onnx.TensorProto.FLOAT8E4M3FN:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0] and scale.shape == (w8.dims[0],)
        values = qdq.fp8_values()  # decode the stored codes: magnitude index, sign bit
        codes = np.frombuffer(w8.raw_data, np.uint8).reshape(tuple(w8.dims))
        stored = np.where(codes & 0x80, -1.0, 1.0) * values[codes & 0x7F].astype(np.float64)
        rows = np.abs(stored.reshape(len(scale), -1)).max(axis=1)  # the largest code per channel
        assert (rows <= 448).all() and (rows >= 244 * (1 - 2.0**-4)).all()
        checked += 1
    assert checked > 10


def test_fp8_grid_never_rounds_a_real_weight_worse_than_max_over_448(real_models):
    from trtq.precision.emulate import folded

    model = folded(onnx.load(str(real_models["det"])))
    grid = 448.0 * 2.0 ** (-np.arange(8) / 8)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init).astype(np.float32)
        if w.ndim != 4 or w.shape[0] < 2:
            continue
        values, scale = qdq.quantize_weight_fp8(w, 0)
        got = values.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
        amax = np.abs(w).max(axis=(1, 2, 3))
        live = amax > 0
        assert np.isclose((amax / scale)[live, None], grid[None, :], rtol=1e-5).any(axis=1).all()
        s448 = (amax / np.float32(448)).astype(np.float32).reshape(-1, 1, 1, 1)
        s448[~live] = 1
        plain = qdq.round_fp8(w / s448).astype(np.float64) * s448
        err = np.square(got - w).reshape(len(w), -1).sum(axis=1)
        err448 = np.square(plain - w).reshape(len(w), -1).sum(axis=1)
        assert (err <= err448 * (1 + 1e-9) + 1e-30).all(), init.name


def test_fp8_det_keeps_the_held_out_text_map(det_fp8):
    """page.png and text.png, never calibrated on: the FP8 model's text map against FP32's."""
    model, q, held = det_fp8
    ref, got = _maps(model, held), _maps(q, held)
    cosine = float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))
    a, b = ref > 0.3, got > 0.3
    assert cosine > 0.98 and (a & b).sum() / (a | b).sum() > 0.9
