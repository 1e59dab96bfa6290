"""Least-squares weight correction (precision/weight_correction.py) against independent numpy
computations: the refitted weights are the ridge solution of the same problem built here with a
plain loop im2col (checked against ONNX Runtime's Conv) and ``np.linalg.lstsq``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from precision_tiny_models import make_model, run_ort, vi

from trtq._core.errors import InputError
from trtq.precision.export import export_qdq
from trtq.precision.weight_correction import correct_weights


def _q(x, amax):
    """Per-tensor INT8 fake quantization written out here: scale amax/127, half to even, saturated
    to [-128, 127] (QuantizeLinear with zero point 0)."""
    scale = np.float32(amax) / np.float32(127)
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def _fq_rows(w):
    """Per-row (output channel) symmetric INT8 rounding of a [C, K] matrix."""
    s = (np.abs(w).max(axis=1, keepdims=True) / 127.0).astype(np.float32)
    return np.clip(np.rint(w / s), -127, 127) * s


def _ridge(a_q, a, u, alpha):
    """min ||[a_q 1] v - [a 1] u||^2 + lam ||v_w - u_w||^2 per column of u [K+1, C], with
    lam = alpha * mean(diag(a_q^T a_q)), as an augmented least-squares problem."""
    n, k = a_q.shape
    lam = alpha * float(np.mean(np.sum(a_q.astype(np.float64) ** 2, axis=0)))
    aq1 = np.hstack([a_q, np.ones((n, 1))]).astype(np.float64)
    target = np.hstack([a, np.ones((n, 1))]).astype(np.float64) @ u
    reg = np.hstack([np.sqrt(lam) * np.eye(k), np.zeros((k, 1))])
    lhs = np.vstack([aq1, reg])
    rhs = np.vstack([target, np.sqrt(lam) * u[:k]])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_weights_are_the_ridge_solution(trans_b):
    rs = np.random.RandomState(0)
    k, c = 12, 5
    w = (rs.randn(c, k) * 0.4).astype(np.float32)  # [out, in]
    b = rs.randn(c).astype(np.float32)
    wb = w if trans_b else np.ascontiguousarray(w.T)
    model = make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="g", transB=trans_b, alpha=0.5)],
        [vi("x", [None, k])],
        [vi("y", [None, c])],
        {"w": wb, "b": b},
    )
    batches = [{"x": (rs.randn(40, k) * 1.5).astype(np.float32)} for _ in range(3)]
    amax = {"x": 2.0}  # clips the tails: Q(x) differs from x by more than rounding
    corrected, rep = correct_weights(model, batches, amax, alpha=0.05)
    x = np.concatenate([bt["x"] for bt in batches])
    u = np.vstack([0.5 * w.T, b[None]]).astype(np.float64)  # effective weights (Gemm alpha 0.5)
    v = _ridge(_q(x, 2.0), x, u, 0.05)
    g = next(n for n in corrected.graph.node if n.op_type == "Gemm")
    got_w = _inits(corrected)[g.input[1]]
    got_w = got_w if trans_b else got_w.T
    np.testing.assert_allclose(0.5 * got_w, v[:k].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_inits(corrected)[g.input[2]], v[k], rtol=1e-5, atol=1e-6)
    (layer,) = rep.layers
    assert layer.samples == 120 and layer.groups == 1
    assert layer.fit_after < layer.fit_before
    # the reported fit error is the independent one: mean squared output error per value (to
    # float32 rounding: the products and the FP32 outputs the fit reads are float32)
    fit = np.mean(
        (np.hstack([_q(x, 2.0), np.ones((120, 1))]) @ v - np.hstack([x, np.ones((120, 1))]) @ u) ** 2
    )
    assert layer.fit_after == pytest.approx(fit, rel=1e-5)


def _im2col(x, kh, kw, stride, pads, dil, groups):
    """[N, C, H, W] -> [groups, N*OH*OW, C/g*kh*kw], plain loops (independent of the module)."""
    n, ch, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dil * (kh - 1) - 1) // stride + 1
    ow = (wd + pads[1] + pads[3] - dil * (kw - 1) - 1) // stride + 1
    cg = ch // groups
    out = np.zeros((groups, n * oh * ow, cg * kh * kw))
    for g in range(groups):
        r = 0
        for i in range(n):
            for y in range(oh):
                for z in range(ow):
                    win = xp[i, g * cg : (g + 1) * cg, y * stride : y * stride + dil * kh : dil][
                        :, :, z * stride : z * stride + dil * kw : dil
                    ]
                    out[g, r] = win.reshape(-1)
                    r += 1
    return out, oh, ow


CONVS = {  # cin, cout, k, stride, pads (t, l, b, r), dilation, groups
    "stride2-pad": (4, 6, 3, 2, (1, 1, 1, 1), 1, 1),
    "grouped-asym-pad-dilated": (4, 6, 3, 1, (0, 2, 1, 0), 2, 2),
    "depthwise": (5, 5, 3, 1, (1, 1, 1, 1), 1, 5),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_weights_are_the_ridge_solution(case):
    cin, cout, k, stride, pads, dil, groups = CONVS[case]
    rs = np.random.RandomState(1)
    w = (rs.randn(cout, cin // groups, k, k) * 0.3).astype(np.float32)
    b = rs.randn(cout).astype(np.float32) * 0.1
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], name="conv", strides=[stride] * 2, pads=list(pads),
        dilations=[dil] * 2, group=groups,
    )  # fmt: skip
    model = make_model(
        [node], [vi("x", [None, cin, 9, 9])], [vi("y", [None, cout, None, None])], {"w": w, "b": b}
    )
    batches = [{"x": np.abs(rs.randn(2, cin, 9, 9)).astype(np.float32) * 2} for _ in range(2)]
    amax = {"x": 3.0}
    x = np.concatenate([bt["x"] for bt in batches])
    a, oh, ow = _im2col(x, k, k, stride, pads, dil, groups)
    # the loop im2col is the convolution ONNX Runtime computes
    per = cout // groups
    ref = run_ort(model, {"x": x})["y"]
    mine = np.stack([a[g] @ w[g * per : (g + 1) * per].reshape(per, -1).T for g in range(groups)])
    mine = mine.reshape(groups, 4, oh, ow, per).transpose(1, 0, 4, 2, 3).reshape(4, cout, oh, ow)
    np.testing.assert_allclose(mine + b[None, :, None, None], ref, rtol=1e-4, atol=1e-4)

    corrected, rep = correct_weights(model, batches, amax, alpha=0.02, positions=10_000)
    aq, _, _ = _im2col(_q(x, 3.0), k, k, stride, pads, dil, groups)
    got = _inits(corrected)
    conv = next(n for n in corrected.graph.node if n.op_type == "Conv")
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        u = np.vstack([w[sl].reshape(per, -1).T, b[None, sl]]).astype(np.float64)
        v = _ridge(aq[g], a[g], u, 0.02)
        np.testing.assert_allclose(got[conv.input[1]][sl].reshape(per, -1), v[:-1].T, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[conv.input[2]][sl], v[-1], rtol=1e-4, atol=1e-6)
    (layer,) = rep.layers
    assert layer.groups == groups and layer.samples == 4 * oh * ow
    assert layer.fit_after <= layer.fit_before


def _clipped_model(rs, k=16, c=8):
    """x -> Gemm: inputs whose channels share a latent factor, so a clipped channel is predictable
    from the others (what a linear refit can exploit)."""
    w = (rs.randn(c, k) * 0.5).astype(np.float32)
    model = make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="g", transB=1)],
        [vi("x", [None, k])],
        [vi("y", [None, c])],
        {"w": w, "b": np.zeros(c, np.float32)},
    )
    mix = rs.randn(4, k).astype(np.float32)

    def data(seed, n=6):
        r = np.random.RandomState(seed)
        return [{"x": (r.randn(64, 4) @ mix + 0.3 * r.randn(64, k)).astype(np.float32)} for _ in range(n)]

    return model, data


def test_planted_clipping_error_is_reduced_on_fresh_data():
    rs = np.random.RandomState(2)
    model, data = _clipped_model(rs)
    cal, fresh = data(10), data(11)
    x = np.concatenate([b["x"] for b in cal])
    amax = {"x": float(np.percentile(np.abs(x), 90))}  # a tenth of the values clipped
    corrected, rep = correct_weights(model, cal, amax)

    def err(m):
        return sum(
            float(np.sum((run_ort(export_qdq(m, amax), b)["y"] - run_ort(model, b)["y"]) ** 2)) for b in fresh
        )

    before, after = err(model), err(corrected)
    assert after < 0.7 * before, (before, after)
    (layer,) = rep.layers
    assert layer.mse_after < layer.mse_before


def test_sequential_sees_the_corrected_upstream_layer():
    rs = np.random.RandomState(3)
    w1 = (rs.randn(8, 10) * 0.4).astype(np.float32)
    w2 = (rs.randn(5, 8) * 0.4).astype(np.float32)
    b1, b2 = rs.randn(8).astype(np.float32) * 0.1, rs.randn(5).astype(np.float32) * 0.1
    model = make_model(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="g1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="g2", transB=1),
        ],
        [vi("x", [None, 10])],
        [vi("y", [None, 5])],
        {"w1": w1, "b1": b1, "w2": w2, "b2": b2},
    )
    batches = [{"x": (rs.randn(50, 10)).astype(np.float32)} for _ in range(3)]
    x = np.concatenate([b["x"] for b in batches])
    r = np.maximum(x @ w1.T + b1, 0)
    amax = {"x": 2.0, "r": float(np.abs(r).max() * 0.8)}
    corrected, rep = correct_weights(model, batches, amax, mode="sequential", alpha=0.01)
    assert [f.node for f in rep.layers] == ["g1", "g2"] and rep.passes == 3  # FP32 + 2 waves
    # layer 1: its input is the graph input, so own and sequential agree
    v1 = _ridge(_q(x, 2.0), x, np.vstack([w1.T, b1[None]]).astype(np.float64), 0.01)
    # layer 2 sees relu of the corrected, INT8-weight layer 1 on Q(x), quantized
    r_q = _q(np.maximum(_q(x, 2.0) @ _fq_rows(v1[:-1].T.astype(np.float32)).T + v1[-1], 0), amax["r"])
    v2 = _ridge(r_q, r, np.vstack([w2.T, b2[None]]).astype(np.float64), 0.01)
    got = _inits(corrected)
    np.testing.assert_allclose(got["w1"], v1[:-1].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["w2"], v2[:-1].T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["b2"], v2[-1], rtol=1e-4, atol=1e-5)
    # own mode fits layer 2 on Q(FP32 r) instead: a different answer
    own, _ = correct_weights(model, batches, amax, mode="own", alpha=0.01)
    assert np.abs(_inits(own)["w2"] - got["w2"]).max() > 1e-4


def test_pinned_and_activation_matmuls_are_untouched_and_huge_alpha_changes_nothing():
    rs = np.random.RandomState(4)
    w1 = (rs.randn(6, 6) * 0.5).astype(np.float32)
    w2 = (rs.randn(6, 6) * 0.5).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
            helper.make_node("MatMul", ["x", "w2"], ["b"], name="mm2"),
            helper.make_node("Transpose", ["b"], ["bt"], name="tr", perm=[1, 0]),
            helper.make_node("MatMul", ["a", "bt"], ["y"], name="mm_act"),
        ],
        [vi("x", [8, 6])],
        [vi("y", [8, 8])],
        {"w1": w1, "w2": w2},
    )
    batches = [{"x": rs.randn(8, 6).astype(np.float32)} for _ in range(3)]
    amax = {t: 2.0 for t in ("x", "a", "b", "bt")}
    corrected, rep = correct_weights(model, batches, amax, pins=["mm2"])
    assert [f.node for f in rep.layers] == ["mm1"]
    got = _inits(corrected)
    np.testing.assert_array_equal(got["w2"], w2)  # pinned
    assert np.abs(got["w1"] - w1).max() > 1e-4  # corrected
    mm_act = next(n for n in corrected.graph.node if n.name == "mm_act")
    assert list(mm_act.input) == ["a", "bt"]  # activation x activation: nothing to refit
    huge, rep_huge = correct_weights(model, batches, amax, alpha=1e12)
    np.testing.assert_allclose(_inits(huge)["w1"], w1, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_inits(huge)["w2"], w2, rtol=1e-6, atol=1e-8)
    assert all(f.rel_weight_change < 1e-7 for f in rep_huge.layers)


def test_bad_input_is_one_line(tmp_path):
    from click.testing import CliRunner

    from trtq.precision.cli import main

    model, data = _clipped_model(np.random.RandomState(5))
    with pytest.raises(InputError, match="mode"):
        correct_weights(model, data(1), {"x": 1.0}, mode="nope")
    with pytest.raises(InputError, match="alpha"):
        correct_weights(model, data(1), {"x": 1.0}, alpha=-1.0)
    with pytest.raises(InputError, match="calibration data"):
        correct_weights(model, [], {"x": 1.0})
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    for extra, msg in (
        (["--weight-correction", "own"], "--weight-correction corrects INT8 layers: give --int8 too"),
        (["--weight-correction-alpha", "1"], "--weight-correction-alpha needs --weight-correction"),
    ):
        res = CliRunner().invoke(
            main, ["export", str(path), "--fp16", *extra, "-o", str(tmp_path / "o.onnx")]
        )
        assert res.exit_code != 0
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and msg in lines[0], res.output
        assert "Traceback" not in res.output


def test_export_cli_weight_correction_on_pp_ocr_cls(real_models, image_dir, tmp_path):
    """Real model, end to end through ``precision export --weight-correction own --json``: ranges
    and the refit from 6 images; every refitted layer's output error on those images goes down
    (INT8 weights as deployed); the held-out cosine of the class scores is reported."""
    import shutil

    from click.testing import CliRunner
    from test_eval_real import HELD, SEARCH, _batches

    from trtq._core.onnx_model import load_onnx
    from trtq.calib.cache import CalibrationCache, write_cache
    from trtq.calib.run import calibrate
    from trtq.precision.cli import main

    dirs = {}
    for label, names in (("search", SEARCH), ("held", HELD)):
        dirs[label] = tmp_path / label
        dirs[label].mkdir()
        for name in names:
            shutil.copy(image_dir / name, dirs[label] / name)
    path, shape, preset = real_models["cls"], (1, 3, 48, 192), "paddleocr-rec"
    model = load_onnx(path)
    cal, held = _batches(path, dirs["search"], shape, preset), _batches(path, dirs["held"], shape, preset)
    amax = calibrate(model, cal, method="entropy2").amax
    write_cache(tmp_path / "c.cache", CalibrationCache.from_amax(amax))
    common = ["--int8", "--cache", str(tmp_path / "c.cache"), "--data", str(dirs["search"]),
              "--shape", "x:1x3x48x192", "--preset", preset]  # fmt: skip
    res = CliRunner().invoke(main, ["export", str(path), *common, "-o", str(tmp_path / "plain.onnx")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        main,
        ["export", str(path), *common, "--weight-correction", "own", "--json", str(tmp_path / "wc.json"),
         "-o", str(tmp_path / "wc.onnx")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "weight correction (own, alpha" in res.output
    doc = json.loads((tmp_path / "wc.json").read_text())
    assert doc["kind"] == "export" and doc["weight_correction"]["mode"] == "own"
    layers = doc["weight_correction"]["layers"]
    assert len(layers) >= 40  # PP-OCR cls: every INT8 Conv/Gemm
    assert {f["op_type"] for f in layers} >= {"Conv"}
    assert any(f["groups"] > 1 for f in layers)  # depthwise convolutions refitted too
    for f in layers:
        assert f["fit_after"] <= f["fit_before"] * (1 + 1e-9), f
    worse = [f["node"] for f in layers if f["mse_after"] >= f["mse_before"]]
    assert len(worse) <= len(layers) // 10, worse

    def cosine(q):
        out = model.graph.output[0].name
        vals = []
        for b in held:
            r, o = run_ort(model, b)[out], run_ort(q, b)[out]
            vals.append(float(r.ravel() @ o.ravel() / (np.linalg.norm(r) * np.linalg.norm(o))))
        return float(np.mean(vals))

    c_plain = cosine(onnx.load(str(tmp_path / "plain.onnx")))
    c_wc = cosine(onnx.load(str(tmp_path / "wc.onnx")))
    print(
        f"PP-OCR cls held-out cosine: plain {c_plain:.4f}, weight-corrected {c_wc:.4f}; {len(worse)} layer(s) worse"
    )


def test_matmuls_without_bias_get_one_and_each_uses_its_own_input_range():
    """A MatMul without a bias gets an Add inserted after it (node indices shift); each layer is
    still fitted on its own input's rounding (``own``) and the new Add carries b'."""
    rs = np.random.RandomState(6)
    w1 = (rs.randn(6, 5) * 0.5).astype(np.float32)
    w2 = (rs.randn(5, 4) * 0.5).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
        ],
        [vi("x", [None, 6])],
        [vi("y", [None, 4])],
        {"w1": w1, "w2": w2},
    )
    batches = [{"x": rs.randn(30, 6).astype(np.float32)} for _ in range(2)]
    x = np.concatenate([b["x"] for b in batches])
    r = np.maximum(x @ w1, 0)
    amax = {"x": 1.5, "r": float(np.abs(r).max()) * 0.6}
    corrected, rep = correct_weights(model, batches, amax, alpha=0.05)
    assert [f.node for f in rep.layers] == ["mm1", "mm2"]
    got = _inits(corrected)
    for name, inp, w, a in (("mm1", x, w1, amax["x"]), ("mm2", r, w2, amax["r"])):
        v = _ridge(_q(inp, a), inp, np.vstack([w, np.zeros((1, w.shape[1]))]), 0.05)
        np.testing.assert_allclose(got[{"mm1": "w1", "mm2": "w2"}[name]], v[:-1], rtol=1e-4, atol=1e-6)
        add = next(n for n in corrected.graph.node if n.op_type == "Add" and n.name.startswith(name))
        np.testing.assert_allclose(got[add.input[1]], v[-1], rtol=1e-4, atol=1e-6)
    y = run_ort(corrected, batches[0])["y"]  # the graph still runs end to end
    assert y.shape == (30, 4)
