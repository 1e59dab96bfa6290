"""Bias correction (precision/bias_correction.py) against independent numpy computations: the
shift planted by INT8 weight rounding is removed exactly, per output channel, in the model that
the Q/DQ export and the TensorRT 10 build both consume."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from precision_tiny_models import make_model, run_ort, vi

from trtq._core.errors import InputError
from trtq.precision.bias_correction import correct_biases
from trtq.precision.emulate import EmulationConfig, emulate
from trtq.precision.export import export_qdq

STEP = np.float32(0.05)  # activation scale: amax = 127 * STEP, inputs on the grid (Q(x) == x)
AMAX = {"x": float(np.float32(127) * STEP)}


def _grid_inputs(rs, shape, n=4):
    # integers 0..100 times the scale: exact INT8 values with a clearly non-zero mean
    return [{"x": (rs.randint(0, 101, size=shape).astype(np.float32) * STEP)} for _ in range(n)]


def _fake_quant(w, axis):
    """Per-channel symmetric INT8 rounding, written out independently of trtq.precision.qdq."""
    reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    scale = (np.abs(w).max(axis=reduce, keepdims=True) / 127.0).astype(np.float32)
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


def _conv_valid(x, w):
    """Plain numpy 2-D convolution, stride 1, no padding: [N,C,H,W] x [O,C,k,k] -> [N,O,H',W']."""
    k = w.shape[-1]
    patches = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # N,C,H',W',k,k
    return np.einsum("nchwij,ocij->nohw", patches.astype(np.float64), w.astype(np.float64))


def _planted_conv_weights(rs, cout=4, cin=3, k=3):
    # weights just off the INT8 grid on the same side, so rounding errors add up per channel
    w = rs.randn(cout, cin, k, k).astype(np.float32)
    w[:, 0, 0, 0] = 2.0  # max |w_c| = 2: scale 2/127 per channel
    scale = 2.0 / 127
    w = np.clip(w, -1.99, 1.99)
    w[:, :, 1:, :] = (
        np.rint(w[:, :, 1:, :] / scale) + 0.4 * np.sign(np.arange(cout) - 1.5)[:, None, None, None]
    ) * scale
    return w.astype(np.float32)


def _conv_model(w, bias=None):
    inits = {"w": w}
    inputs = ["x", "w"]
    if bias is not None:
        inits["b"] = bias
        inputs.append("b")
    return make_model(
        [helper.make_node("Conv", inputs, ["y"], name="conv")],
        [vi("x", [None, w.shape[1], 8, 8])],
        [vi("y", [None, w.shape[0], 6, 6])],
        inits,
    )


def _mean_error(model_q, model_ref, batches, axis):
    """Per-channel mean of (quantized - FP32) output over the data."""
    diffs = []
    for b in batches:
        d = run_ort(model_q, b)["y"].astype(np.float64) - run_ort(model_ref, b)["y"].astype(np.float64)
        diffs.append(np.moveaxis(d, axis, -1).reshape(-1, d.shape[axis]))
    return np.concatenate(diffs).mean(axis=0)


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_bias_correction_removes_the_planted_shift(with_bias):
    rs = np.random.RandomState(0)
    w = _planted_conv_weights(rs)
    b = rs.randn(4).astype(np.float32) if with_bias else None
    model = _conv_model(w, b)
    batches = _grid_inputs(rs, (2, 3, 8, 8))
    # independent: E[(W_q - W) x] per output channel (inputs exact on the grid, so Q(x) = x)
    x = np.concatenate([bt["x"] for bt in batches])
    expected = _conv_valid(x, _fake_quant(w, 0) - w).mean(axis=(0, 2, 3))
    assert np.abs(expected).min() > 5e-3  # a real, planted systematic shift
    before = _mean_error(export_qdq(model, AMAX), model, batches, 1)
    np.testing.assert_allclose(before, expected, rtol=1e-4, atol=1e-6)

    corrected, report = correct_biases(model, batches, AMAX, passes=1)
    (layer,) = report.layers
    assert layer.op_type == "Conv" and layer.channels == 4
    assert layer.created == ("" if with_bias else "bias")
    conv = next(n for n in corrected.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3  # a model without a bias gets one
    new_b = numpy_helper.to_array(next(i for i in corrected.graph.initializer if i.name == conv.input[2]))
    old_b = b if with_bias else np.zeros(4, np.float32)
    np.testing.assert_allclose(old_b - new_b, expected, rtol=1e-5, atol=1e-6)
    assert layer.mean_abs_shift == pytest.approx(np.abs(expected).mean(), rel=1e-5)
    after = _mean_error(export_qdq(corrected, AMAX), model, batches, 1)
    scale = np.abs(run_ort(model, batches[0])["y"]).mean()
    assert np.abs(after).max() <= 1e-5 * scale
    # the TensorRT 10 path (emulation of the corrected FP32 model) sees the same correction
    emulated = emulate(corrected, EmulationConfig("int8"), AMAX)
    np.testing.assert_allclose(_mean_error(emulated, model, batches, 1), after, atol=1e-5 * scale)


def _matmul_model(wb, add_bias):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm" if add_bias is not None else "y"], name="mm")]
    inits = {"w": wb}
    if add_bias is not None:
        nodes.append(helper.make_node("Add", ["mm", "c"], ["y"], name="add"))
        inits["c"] = add_bias
    return make_model(nodes, [vi("x", [None, 5, wb.shape[0]])], [vi("y", [None, 5, wb.shape[1]])], inits)


@pytest.mark.parametrize("with_add", [True, False])
def test_matmul_bias_correction_folds_into_the_add_or_adds_one(with_add):
    rs = np.random.RandomState(1)
    k, n = 16, 6
    wb = (rs.randn(k, n) * 0.2).astype(np.float32)
    wb += (np.float32(0.3) * np.abs(wb).max(axis=0) / 127).astype(np.float32)  # push off the grid, one way
    c = rs.randn(n).astype(np.float32) if with_add else None
    model = _matmul_model(wb, c)
    batches = _grid_inputs(rs, (3, 5, k))
    x = np.concatenate([bt["x"] for bt in batches]).astype(np.float64)
    expected = (x @ (_fake_quant(wb, -1) - wb).astype(np.float64)).reshape(-1, n).mean(axis=0)
    assert np.abs(expected).max() > 1e-3

    corrected, report = correct_biases(model, batches, AMAX, passes=2)
    (layer,) = report.layers
    assert layer.op_type == "MatMul"
    np.testing.assert_allclose(layer.mean_abs_shift, np.abs(expected).mean(), rtol=1e-4)
    adds = [nd for nd in corrected.graph.node if nd.op_type == "Add"]
    assert len(adds) == 1  # the existing Add carries it, or one Add was inserted
    assert layer.created == ("" if with_add else "add")
    const = numpy_helper.to_array(next(i for i in corrected.graph.initializer if i.name in adds[0].input))
    np.testing.assert_allclose((c if with_add else 0) - const, expected, rtol=1e-4, atol=1e-6)
    after = _mean_error(export_qdq(corrected, AMAX), model, batches, -1)
    scale = np.abs(run_ort(model, batches[0])["y"]).mean()
    assert np.abs(after).max() <= 1e-5 * scale
    assert layer.residual_mean_abs <= 1e-5 * scale


def _q(x, amax):
    scale = np.float32(amax) / np.float32(127)
    return np.clip(np.rint(x / scale), -128, 127) * scale


def test_gemm_sequential_weight_shift_matches_numpy_and_output_mode_zeroes_the_mean_error():
    rs = np.random.RandomState(2)
    w1 = (rs.randn(8, 12) * 0.3).astype(np.float32)
    w2 = (rs.randn(6, 8) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="g1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="g2", transB=1),
    ]
    model = make_model(
        nodes,
        [vi("x", [None, 12])],
        [vi("y", [None, 6])],
        {"w1": w1, "w2": w2, "b2": np.zeros(6, np.float32)},
    )
    batches = _grid_inputs(rs, (16, 12), n=6)
    amax = dict(AMAX)
    amax["r"] = max(float(np.abs(run_ort(model, b, ["r"])["r"]).max()) for b in batches)
    corrected, rep = correct_biases(model, batches, amax, passes=2)
    assert [c.node for c in rep.layers] == ["g1", "g2"]
    assert rep.layers[0].created == "bias"
    assert max(c.residual_mean_abs for c in rep.layers) < 1e-6  # converged: sequential
    # independent: layer 1's shift on the exact inputs, layer 2's on its corrected, quantized input
    x = np.concatenate([b["x"] for b in batches]).astype(np.float64)
    wq1, wq2 = _fake_quant(w1, 0).astype(np.float64), _fake_quant(w2, 0).astype(np.float64)
    d1 = (x @ (wq1 - w1).T).mean(axis=0)
    r_hat = _q(np.maximum(x @ wq1.T - d1, 0).astype(np.float32), amax["r"]).astype(np.float64)
    d2 = (r_hat @ (wq2 - w2).T).mean(axis=0)
    inits = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}
    g1, g2 = (n for n in corrected.graph.node if n.op_type == "Gemm")
    np.testing.assert_allclose(-inits[g1.input[2]], d1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(-inits[g2.input[2]], d2, rtol=1e-3, atol=1e-6)
    # mode="output": the whole mean output error (activation rounding included) goes to zero
    out, _ = correct_biases(model, batches, amax, passes=3, mode="output")
    before = np.abs(_mean_error(export_qdq(model, amax), model, batches, -1)).max()
    after = np.abs(_mean_error(export_qdq(out, amax), model, batches, -1)).max()
    assert after < 1e-3 * before


def test_bias_correction_needs_data():
    model = _conv_model(np.ones((2, 3, 3, 3), np.float32))
    with pytest.raises(InputError):
        correct_biases(model, [], AMAX)
    with pytest.raises(InputError):
        correct_biases(model, [{"x": np.zeros((1, 3, 8, 8), np.float32)}], AMAX, mode="nope")
    assert isinstance(model, onnx.ModelProto)


def test_export_cli_bias_correction_on_pp_ocr_cls(real_models, image_dir, tmp_path):
    """Real model, end to end through ``precision export --bias-correction``: ranges and the
    correction from 6 images, held-out cosine of the class scores on the other 6."""
    import shutil

    from click.testing import CliRunner
    from test_eval_real import HELD, SEARCH, _batches

    from trtq._core.onnx_model import load_onnx
    from trtq.calib.cache import CalibrationCache, write_cache
    from trtq.calib.run import calibrate
    from trtq.precision.cli import main

    search = tmp_path / "search"
    search.mkdir()
    for name in SEARCH:
        shutil.copy(image_dir / name, search / name)
    path, shape, preset = real_models["cls"], (1, 3, 48, 192), "paddleocr-rec"
    model = load_onnx(path)
    cal = _batches(path, search, shape, preset)
    held_dir = tmp_path / "held"
    held_dir.mkdir()
    for name in HELD:
        shutil.copy(image_dir / name, held_dir / name)
    held = _batches(path, held_dir, shape, preset)
    amax = calibrate(model, cal, method="entropy2").amax
    write_cache(tmp_path / "c.cache", CalibrationCache.from_amax(amax))
    common = ["--int8", "--cache", str(tmp_path / "c.cache"), "--data", str(search), "--shape", "x:1x3x48x192",
              "--preset", preset]  # fmt: skip
    for flag, out in (("--no-bias-correction", "plain.onnx"), ("--bias-correction", "bc.onnx")):
        res = CliRunner().invoke(main, ["export", str(path), *common, flag, "-o", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
    assert "bias correction:" in res.output

    def cosine(q):
        vals = []
        for b in held:
            r, o = run_ort(model, b)[model.graph.output[0].name], run_ort(q, b)[model.graph.output[0].name]
            vals.append(float(r.ravel() @ o.ravel() / (np.linalg.norm(r) * np.linalg.norm(o))))
        return float(np.mean(vals))

    plain, corrected = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "bc.onnx"))
    c_plain, c_bc = cosine(plain), cosine(corrected)
    print(f"PP-OCR cls held-out cosine: plain {c_plain:.4f}, bias-corrected {c_bc:.4f}")
    # the cache is the same: the corrected model differs only in its biases
    assert sum(n.op_type == "QuantizeLinear" for n in plain.graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in corrected.graph.node
    )
    assert c_bc >= c_plain
