"""AdaRound (precision/adaround.py) against independent computations: the best rounding found by
trying every up/down choice on small layers, the output error computed from the data itself, and
the bias ``np.linalg.lstsq`` fits; then through weight correction and the Q/DQ export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper, numpy_helper
from precision_tiny_models import make_model, run_ort, vi

from trtq.precision.adaround import adaround
from trtq.precision.export import export_qdq
from trtq.precision.weight_correction import correct_weights


def _layer(rs, k, c, n=3000, grid=20.0):
    """A linear layer on correlated inputs: FP32 inputs ``x``, quantized inputs ``xq`` (a grid of
    1/``grid``), weights [K, C], bias [C], outputs ``y = x w + b``."""
    mix = rs.normal(size=(k, k)) / np.sqrt(k)
    x = rs.normal(size=(n, k)) @ mix + 0.5
    w = rs.normal(size=(k, c))
    b = rs.normal(size=c)
    return x, np.round(x * grid) / grid, w, b, x @ w + b


def _quadratic(xq, y):
    a = np.hstack([xq, np.ones((len(xq), 1))])
    return (a.T @ a)[None], (a.T @ y)[None], float(np.sum(y * y))


def _steps(w):
    return np.broadcast_to(np.abs(w).max(axis=0, keepdims=True) / 127.0, w.shape)


def _direct_error(xq, y, w, b):
    return float(np.sum((xq @ w + b - y) ** 2))


def _lstsq_bias(xq, y, w):
    return np.mean(y - xq @ w, axis=0)


def test_never_worse_than_nearest_and_close_to_the_best_of_all_roundings():
    rs = np.random.default_rng(0)
    gained, possible = 0.0, 0.0
    for k, grid in ((4, 20), (6, 20), (8, 20), (10, 1000), (12, 1000), (12, 20)):
        x, xq, w, b, y = _layer(rs, k, 3, grid=grid)
        g, r, p = _quadratic(xq, y)
        step = _steps(w)
        res = adaround(g, r, p, w[None], step[None])
        codes = res.codes[0]
        got_w = codes * step
        # the reported errors are the data's own squared errors, each with its least-squares bias
        assert res.error == pytest.approx(_direct_error(xq, y, got_w, res.bias[0]), rel=1e-6)
        near = np.rint(w / step)
        assert res.error_nearest == pytest.approx(
            _direct_error(xq, y, near * step, _lstsq_bias(xq, y, near * step)), rel=1e-6
        )
        np.testing.assert_allclose(res.bias[0], _lstsq_bias(xq, y, got_w), rtol=1e-6, atol=1e-9)
        assert res.error <= res.error_nearest
        assert res.flipped == int(np.sum(codes != near))
        # the best rounding by trying every up/down choice, per output channel
        base, best = np.floor(w / step), 0.0
        for ch in range(3):
            trials = []
            for bits in itertools.product((0, 1), repeat=k):
                wc = (base[:, ch] + np.array(bits)) * step[:, ch]
                bc = float(np.mean(y[:, ch] - xq @ wc))
                trials.append(float(np.sum((xq @ wc + bc - y[:, ch]) ** 2)))
            best += min(trials)
        assert best <= res.error + 1e-9
        gained += res.error_nearest - res.error
        possible += res.error_nearest - best
    # measured: 0.23-1.0 of the possible gain per layer, 0.83 over all six
    assert gained >= 0.6 * possible, (gained, possible)


def test_codes_are_floor_or_ceil_and_every_channel_keeps_its_scale():
    rs = np.random.default_rng(1)
    x, xq, w, b, y = _layer(rs, 48, 16)
    w[3, 5] = -np.abs(w[:, 5]).max() * 1.5  # a channel whose largest |w| is negative
    y = x @ w + b
    g, r, p = _quadratic(xq, y)
    step = _steps(w)
    res = adaround(g, r, p, w[None], step[None])
    codes, ratio = res.codes[0], w / step
    assert np.all((codes == np.floor(ratio)) | (codes == np.ceil(ratio)))
    assert np.all(np.abs(codes) <= 127)
    np.testing.assert_array_equal(np.abs(codes).max(axis=0), 127)  # so max |w~| / 127 is the step
    assert codes[3, 5] == -127
    # the error rounding adds to the float weights' own error (input rounding) mostly goes
    floor = _direct_error(xq, y, w, _lstsq_bias(xq, y, w))
    assert res.flipped > 0
    assert res.error - floor < 0.6 * (res.error_nearest - floor), (floor, res.error, res.error_nearest)


def test_a_kept_bias_is_not_refitted_and_shared_biases_fit_all_blocks():
    rs = np.random.default_rng(2)
    x, xq, w, b, y = _layer(rs, 8, 4)
    g, r, p = _quadratic(xq, y)
    step = _steps(w)
    kept = adaround(g, r, p, w[None], step[None], bias=b[None])
    np.testing.assert_array_equal(kept.bias, b[None])
    assert kept.error == pytest.approx(_direct_error(xq, y, kept.codes[0] * step, b), rel=1e-6)
    # two blocks (a ConvTranspose's phases: other inputs, other weights) adding one bias
    x2, xq2, w2, _, _ = _layer(rs, 8, 4)
    y2 = x2 @ w2 + b
    g2, r2, p2 = _quadratic(xq2, y2)
    step2 = _steps(w2)
    res = adaround(
        np.concatenate([g, g2]), np.concatenate([r, r2]), p + p2, np.stack([w, w2]), np.stack([step, step2]),
        shared_bias=True,
    )  # fmt: skip
    wa, wb = res.codes[0] * step, res.codes[1] * step2
    resid = np.concatenate([y - xq @ wa, y2 - xq2 @ wb])
    np.testing.assert_allclose(res.bias, resid.mean(axis=0), rtol=1e-6, atol=1e-9)
    direct = _direct_error(xq, y, wa, res.bias) + _direct_error(xq2, y2, wb, res.bias)
    assert res.error == pytest.approx(direct, rel=1e-6)


def _conv_model(rs, cin=12, cout=10):
    """x -> Conv 3x3 on inputs whose channels share two latent maps (correlated patches)."""
    w = (rs.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [vi("x", [None, cin, 12, 12])],
        [vi("y", [None, cout, None, None])],
        {"w": w, "b": np.zeros(cout, np.float32)},
    )
    mix = rs.standard_normal((cin, 2)).astype(np.float32)

    def data(seed, n=4):
        r = np.random.default_rng(seed)
        lat = r.standard_normal((n, 2, 2, 12, 12)).astype(np.float32)
        return [
            {"x": (np.einsum("ck,bkhw->bchw", mix, lat[i]) + 0.2 * r.standard_normal((2, cin, 12, 12))).astype(np.float32)}
            for i in range(n)
        ]  # fmt: skip

    return model, data


def test_export_writes_the_chosen_codes_and_the_output_error_drops_on_fresh_data():
    rs = np.random.default_rng(3)
    model, data = _conv_model(rs)
    cal, fresh = data(10), data(11)
    amax = {"x": float(max(np.abs(b["x"]).max() for b in cal))}
    rounded, rep = correct_weights(model, cal, amax, alpha=float("inf"), rounding="adaround")
    (layer,) = rep.layers
    assert rep.rounding == "adaround" and layer.flipped > 0
    # most of the error INT8 rounding adds to the float weights' own (fit_after: alpha inf keeps
    # them) is gone
    excess_before, excess_after = layer.mse_before - layer.fit_after, layer.mse_after - layer.fit_after
    assert excess_after < 0.3 * excess_before, layer
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    w_new = numpy_helper.to_array(next(i for i in rounded.graph.initializer if i.name == "w"))
    step = np.abs(w).max(axis=(1, 2, 3), keepdims=True).astype(np.float32) / np.float32(127)
    codes = np.rint(w_new / step)
    np.testing.assert_allclose(w_new, codes * step, rtol=1e-6, atol=1e-9)  # on the steps
    ratio = w / step
    assert np.all((codes == np.floor(ratio)) | (codes == np.ceil(ratio)))
    assert int(np.sum(codes != np.rint(ratio))) == layer.flipped
    # the export quantizes the written weights to exactly these codes, with the same scales
    q = export_qdq(rounded, amax)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq = next(
        n
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    )
    np.testing.assert_array_equal(inits[dq.input[0]].astype(np.float64), codes)
    np.testing.assert_allclose(inits[dq.input[1]], step.ravel(), rtol=1e-6)

    def err(m):
        return sum(
            float(np.sum((run_ort(export_qdq(m, amax), b)["y"] - run_ort(model, b)["y"]) ** 2)) for b in fresh
        )

    before, after = err(model), err(rounded)
    assert after < 0.9 * before, (before, after)


def test_unknown_rounding_is_a_clear_error():
    from trtq._core.errors import InputError

    rs = np.random.default_rng(4)
    model, data = _conv_model(rs)
    with pytest.raises(InputError, match="unknown weight rounding 'up'"):
        correct_weights(model, data(1), {"x": 3.0}, rounding="up")


def test_export_cli_adaround_on_pp_ocr_cls(real_models, image_dir, tmp_path):
    """Real model through ``precision export --int8 --adaround --json``: every INT8 layer's
    weights rounded on 6 images, none of them with a larger output error than nearest rounding
    (INT8 weights as deployed), many of them smaller; the written weights sit on their steps."""
    import json
    import shutil

    import onnx
    from click.testing import CliRunner
    from test_eval_real import SEARCH, _batches

    from trtq.calib.cache import CalibrationCache, write_cache
    from trtq.calib.run import calibrate
    from trtq.precision.cli import main

    data = tmp_path / "search"
    data.mkdir()
    for name in SEARCH:
        shutil.copy(image_dir / name, data / name)
    path, shape, preset = real_models["cls"], (1, 3, 48, 192), "paddleocr-rec"
    model = onnx.load(str(path))
    amax = calibrate(model, _batches(path, data, shape, preset), method="entropy2").amax
    write_cache(tmp_path / "c.cache", CalibrationCache.from_amax(amax))
    common = ["export", str(path), "--cache", str(tmp_path / "c.cache"), "--data", str(data),
              "--shape", "x:1x3x48x192", "--preset", preset, "--adaround"]  # fmt: skip
    res = CliRunner().invoke(main, [*common, "--fp16", "-o", str(tmp_path / "no.onnx")])
    assert res.exit_code == 2 and "--adaround corrects INT8 layers: give --int8 too" in res.output
    assert not (tmp_path / "no.onnx").exists()
    res = CliRunner().invoke(
        main, [*common, "--int8", "--json", str(tmp_path / "a.json"), "-o", str(tmp_path / "a.onnx")]
    )
    assert res.exit_code == 0, res.output
    assert "adaround (the original weights)" in res.output
    doc = json.loads((tmp_path / "a.json").read_text())["weight_correction"]
    assert (
        doc["rounding"] == "adaround" and doc["mode"] == "own" and doc["alpha"] is None
    )  # infinite: no refit
    layers = doc["layers"]
    assert len(layers) >= 40 and any(f["groups"] > 1 for f in layers)
    for f in layers:
        assert f["mse_after"] <= f["mse_before"] * (1 + 1e-9), f
    better = [f for f in layers if f["flipped"] > 0 and f["mse_after"] < 0.95 * f["mse_before"]]
    assert len(better) >= len(layers) // 4, [(f["node"], f["mse_before"], f["mse_after"]) for f in layers]
    q = onnx.load(str(tmp_path / "a.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 0


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_alpha_keeps_its_output_channel_scales(trans_b):
    """Gemm ``alpha * x B``: the steps follow the weight's output-channel axis (1 for [K, N], 0 for
    transB [N, K]) and the Gemm's alpha; the export reproduces the codes."""
    rs = np.random.default_rng(5)
    k, c = 24, 6
    w = (rs.standard_normal((c, k)) * 0.4).astype(np.float32)  # [out, in]
    wb = w if trans_b else np.ascontiguousarray(w.T)
    model = make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="g", transB=trans_b, alpha=0.5)],
        [vi("x", [None, k])],
        [vi("y", [None, c])],
        {"w": wb, "b": np.zeros(c, np.float32)},
    )
    mix = rs.standard_normal((3, k)).astype(np.float32)
    cal = [{"x": (rs.standard_normal((64, 3)) @ mix).astype(np.float32)} for _ in range(4)]
    amax = {"x": float(max(np.abs(b["x"]).max() for b in cal))}
    rounded, rep = correct_weights(model, cal, amax, alpha=float("inf"), rounding="adaround")
    (layer,) = rep.layers
    assert layer.flipped > 0 and layer.mse_after < layer.mse_before
    new = numpy_helper.to_array(next(i for i in rounded.graph.initializer if i.name == "w"))
    axis = 0 if trans_b else 1
    step = np.abs(wb).max(axis=1 - axis, keepdims=True) / np.float32(127)
    codes = np.rint(new / step)
    np.testing.assert_allclose(new, codes * step, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(np.abs(codes).max(axis=1 - axis), 127)
    q = export_qdq(rounded, amax)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    np.testing.assert_array_equal(inits[dq.input[0]].astype(np.float64), codes)


def test_conv_transpose_keeps_its_axis_1_scales_and_its_bias():
    rs = np.random.default_rng(6)
    cin, cout = 6, 4
    w = (rs.standard_normal((cin, cout, 2, 2)) * 0.3).astype(np.float32)
    b = rs.standard_normal(cout).astype(np.float32) * 0.1
    model = make_model(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", strides=[2, 2])],
        [vi("x", [None, cin, 8, 8])],
        [vi("y", [None, cout, None, None])],
        {"w": w, "b": b},
    )
    mix = rs.standard_normal((cin, 2)).astype(np.float32)
    cal = [
        {"x": np.einsum("ck,bkhw->bchw", mix, rs.standard_normal((2, 2, 8, 8))).astype(np.float32)}
        for _ in range(3)
    ]
    amax = {"x": float(max(np.abs(c["x"]).max() for c in cal))}
    rounded, rep = correct_weights(model, cal, amax, alpha=float("inf"), rounding="adaround")
    (layer,) = rep.layers
    assert layer.op_type == "ConvTranspose" and layer.flipped > 0
    assert layer.mse_after <= layer.mse_before
    new = numpy_helper.to_array(next(i for i in rounded.graph.initializer if i.name == "w"))
    step = np.abs(w).max(axis=(0, 2, 3), keepdims=True) / np.float32(127)
    codes = np.rint(new / step)
    np.testing.assert_allclose(new, codes * step, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(np.abs(codes).max(axis=(0, 2, 3)), 127)
    # the rounding keeps the layer's bias (alpha inf: the original one); the least-squares bias
    # shared by the phases is checked against adaround() itself above
    new_b = numpy_helper.to_array(next(i for i in rounded.graph.initializer if i.name == "b"))
    np.testing.assert_array_equal(new_b, b)


def test_bias_correction_after_adaround_is_refused(real_models, image_dir, tmp_path):
    """AdaRound writes weights on the INT8 grid: bias correction after it measured a zero shift on
    every layer and wrote the same model, as if it had run. It is refused with the reason."""
    from click.testing import CliRunner

    from trtq._core.errors import InputError
    from trtq.precision.cli import main as precision_main
    from trtq.precision.recovery import Recovery

    with pytest.raises(InputError, match="nothing to fold"):
        Recovery(adaround=True, bias_correction=True)
    res = CliRunner().invoke(
        precision_main,
        ["export", str(real_models["cls"]), "--int8", "--cache", str(tmp_path / "none.cache"), "--adaround",
         "--bias-correction", "--data", str(image_dir), "-o", str(tmp_path / "x.onnx")],
    )  # fmt: skip
    assert res.exit_code == 2 and "--bias-correction after --adaround" in res.output
    assert not (tmp_path / "x.onnx").exists()
