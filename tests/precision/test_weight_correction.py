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
    assert layer.fit_after == pytest.approx(fit, rel=1e-6)


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


def _col2im_patches(x, k, stride, pads, dil, out_hw):
    """ConvTranspose as a linear map, by plain loops (independent of the module): for every output
    position (n, oh, ow), the [Cin * k * k] vector of input values each kernel tap adds into it
    (input ``ih`` reaches output ``ih * stride - pad_top + kh * dil``), 0 where no input does."""
    n, cin, h, w = x.shape
    oh_n, ow_n = out_hw
    rows = np.zeros((n * oh_n * ow_n, cin, k, k))
    r = 0
    for i in range(n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                for kh in range(k):
                    for kw in range(k):
                        ih, rem_h = divmod(oh + pads[0] - kh * dil, stride)
                        iw, rem_w = divmod(ow + pads[1] - kw * dil, stride)
                        if rem_h == 0 and rem_w == 0 and 0 <= ih < h and 0 <= iw < w:
                            rows[r, :, kh, kw] = x[i, :, ih, iw]
                r += 1
    return rows.reshape(len(rows), -1)


DECONVS = {  # cin, cout, k, stride, pads (t, l, b, r), dilation, output_padding
    "k4-s2-p1 (ViT-S decoder)": (3, 4, 4, 2, (1, 1, 1, 1), 1, 0),
    "k2-s2 (PP-OCR det head)": (3, 2, 2, 2, (0, 0, 0, 0), 1, 0),
    "k4-s2-asym-pad-outpad": (2, 3, 4, 2, (2, 1, 0, 1), 1, 1),
    "k3-s1-dilated": (3, 2, 3, 1, (1, 0, 2, 1), 2, 0),
}


@pytest.mark.parametrize("case", sorted(DECONVS))
def test_conv_transpose_weights_are_the_ridge_solution(case):
    """A ConvTranspose is refitted like a Conv: the weights [Cin, Cout, k, k] and bias equal the
    ridge solution of the loop-built linear map above (checked against ONNX Runtime), and the
    reported INT8 error quantizes the weights per output channel along axis 1, as the export."""
    cin, cout, k, stride, pads, dil, outpad = DECONVS[case]
    rs = np.random.RandomState(7)
    w = (rs.randn(cin, cout, k, k) * 0.3).astype(np.float32)
    w[:, 1] *= 6.0  # output channels of different ranges: the per-channel axis matters
    b = rs.randn(cout).astype(np.float32) * 0.1
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], name="deconv", strides=[stride] * 2, pads=list(pads),
        dilations=[dil] * 2, output_padding=[outpad] * 2,
    )  # fmt: skip
    model = make_model(
        [node], [vi("x", [None, cin, 5, 6])], [vi("y", [None, cout, None, None])], {"w": w, "b": b}
    )
    batches = [{"x": (rs.randn(2, cin, 5, 6) * 1.5).astype(np.float32)} for _ in range(3)]
    amax = {"x": 2.5}
    x = np.concatenate([bt["x"] for bt in batches])
    ref = run_ort(model, {"x": x})["y"]
    oh, ow = ref.shape[2:]
    a = _col2im_patches(x, k, stride, pads, dil, (oh, ow))
    wmat = w.transpose(0, 2, 3, 1).reshape(-1, cout).astype(np.float64)  # rows (ci, kh, kw)
    mine = (a @ wmat + b).reshape(len(x), oh, ow, cout).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4)

    corrected, rep = correct_weights(model, batches, amax, alpha=0.05, positions=10_000)
    (layer,) = rep.layers
    assert layer.op_type == "ConvTranspose" and layer.samples == len(x) * oh * ow and not rep.skipped
    aq = _col2im_patches(_q(x, 2.5), k, stride, pads, dil, (oh, ow))
    u = np.vstack([wmat, b[None]]).astype(np.float64)
    v = _ridge(aq, a, u, 0.05)
    got = _inits(corrected)
    deconv = next(n for n in corrected.graph.node if n.op_type == "ConvTranspose")
    got_w = got[deconv.input[1]].transpose(0, 2, 3, 1).reshape(-1, cout)
    np.testing.assert_allclose(got_w, v[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[deconv.input[2]], v[-1], rtol=1e-4, atol=1e-5)
    # INT8 weights per output channel: axis 1 of [Cin, Cout, k, k]
    s = np.abs(w).max(axis=(0, 2, 3), keepdims=True) / 127.0
    wq = (np.clip(np.rint(w / s), -127, 127) * s).transpose(0, 2, 3, 1).reshape(-1, cout)
    n = len(aq)
    before = np.mean((np.hstack([aq, np.ones((n, 1))]) @ np.vstack([wq, b[None]]) - a @ wmat - b) ** 2)
    assert layer.mse_before == pytest.approx(before, rel=1e-4)
    fit = np.mean((np.hstack([aq, np.ones((n, 1))]) @ v - np.hstack([a, np.ones((n, 1))]) @ u) ** 2)
    assert layer.fit_after == pytest.approx(fit, rel=1e-4)
    assert layer.fit_after < layer.fit_before and layer.mse_after < layer.mse_before
    y = run_ort(corrected, batches[0])["y"]  # the refitted graph runs, same output shape
    assert y.shape == (2, cout, oh, ow)


def test_conv_transpose_that_cannot_be_split_in_phases_is_skipped_with_the_reason():
    rs = np.random.RandomState(8)
    w = (rs.randn(2, 3, 3, 3) * 0.3).astype(np.float32)  # k 3, stride 2: phases read 2 and 1 taps
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", strides=[2, 2])
    model = make_model([node], [vi("x", [None, 2, 4, 4])], [vi("y", [None, 3, None, None])], {"w": w})
    batches = [{"x": rs.randn(1, 2, 4, 4).astype(np.float32)}]
    corrected, rep = correct_weights(model, batches, {"x": 2.0})
    assert not rep.layers and "phases" in rep.skipped["deconv"]
    deconv = next(n for n in corrected.graph.node if n.op_type == "ConvTranspose")
    np.testing.assert_array_equal(_inits(corrected)[deconv.input[1]], w)


def test_singular_group_gets_the_minimum_norm_answer_and_the_others_their_exact_solve():
    """alpha 0 and one group of a grouped Conv with a dead input channel: the batched solve of all
    groups fails, each group is then solved alone (the dead one by least squares, minimum norm),
    every group equal to its own independent least-squares fit."""
    cin, cout, groups = 4, 4, 2
    rs = np.random.RandomState(9)
    w = (rs.randn(cout, cin // groups, 3, 3) * 0.3).astype(np.float32)
    b = rs.randn(cout).astype(np.float32) * 0.1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], group=groups)
    model = make_model(
        [node], [vi("x", [None, cin, 6, 6])], [vi("y", [None, cout, None, None])], {"w": w, "b": b}
    )
    batches = []
    for _ in range(3):
        xb = (rs.randn(2, cin, 6, 6) * 1.5).astype(np.float32)
        xb[:, 1] = 0.0  # group 0's second channel is dead
        batches.append({"x": xb})
    corrected, _ = correct_weights(model, batches, {"x": 2.0}, alpha=0.0, positions=10_000)
    x = np.concatenate([bt["x"] for bt in batches])
    a, _, _ = _im2col(x, 3, 3, 1, (1, 1, 1, 1), 1, groups)
    aq, _, _ = _im2col(_q(x, 2.0), 3, 3, 1, (1, 1, 1, 1), 1, groups)
    got = _inits(corrected)
    conv = next(n for n in corrected.graph.node if n.op_type == "Conv")
    per = cout // groups
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        u = np.vstack([w[sl].reshape(per, -1).T, b[None, sl]]).astype(np.float64)
        v = _ridge(aq[g], a[g], u, 0.0)  # lstsq: the minimum-norm least-squares fit
        np.testing.assert_allclose(got[conv.input[1]][sl].reshape(per, -1), v[:-1].T, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(got[conv.input[2]][sl], v[-1], rtol=1e-3, atol=1e-5)
    assert np.all(got[conv.input[1]][0:per, 1] == 0.0)  # the dead channel's weights: minimum norm


def _residual_net(rs):
    """x -> conv1 -> relu -> conv2 -> + (conv1's relu) -> relu -> conv3 (1x1) -> y, and a branch
    conv4 on x added at the end: the later waves read tensors computed several waves before."""
    c = 4

    def conv(name, src, dst, k=3):
        return helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [dst], name=name, pads=[k // 2] * 4)

    inits = {}
    for name, k in (("c1", 3), ("c2", 3), ("c3", 1), ("c4", 3)):
        cin = 2 if name in ("c1", "c4") else c
        inits[f"{name}_w"] = (rs.randn(c, cin, k, k) * 0.4).astype(np.float32)
        inits[f"{name}_b"] = (rs.randn(c) * 0.1).astype(np.float32)
    nodes = [
        conv("c1", "x", "h1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        conv("c2", "r1", "h2"),
        helper.make_node("Add", ["h2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        conv("c3", "r2", "h3", k=1),
        conv("c4", "x", "h4"),
        helper.make_node("Add", ["h3", "h4"], ["y"], name="out"),
    ]
    return make_model(nodes, [vi("x", [None, 2, 7, 7])], [vi("y", [None, c, 7, 7])], inits)


def test_sequential_passes_that_reuse_earlier_tensors_equal_whole_emulation_passes(monkeypatch):
    """The sequential fit computes per wave only what the previous waves changed and reads the
    rest from tensors kept from earlier passes; the answer equals the plain algorithm (the whole
    emulation run for every wave) and the one that keeps nothing (everything recomputed)."""
    from trtq.precision import weight_correction as wc
    from trtq.runtime.onnxruntime import run_marked

    rs = np.random.RandomState(10)
    model = _residual_net(rs)
    batches = [{"x": (rs.randn(2, 2, 7, 7) * 1.2).astype(np.float32)} for _ in range(3)]
    names = ["x", "r1", "r2", "h1", "h2", "h3", "h4", "s"]
    outs = [run_ort(model, bt, names) for bt in batches]
    amax = {t: float(max(np.abs(o[t]).max() for o in outs)) * 0.7 for t in names}
    runs = []

    def whole(self, j, emulated, feeds):
        runs.append(j)
        yield from run_marked(emulated, self.needed[j], feeds)

    fast, rep = correct_weights(model, batches, amax, mode="sequential", alpha=0.02)
    assert rep.passes == 4  # FP32 + waves {c1, c4}, {c2}, {c3}
    monkeypatch.setattr(wc, "STORE_BYTES", 0)
    recomputed, _ = correct_weights(model, batches, amax, mode="sequential", alpha=0.02)
    monkeypatch.setattr(wc._WavePasses, "run", whole)
    plain, _ = correct_weights(model, batches, amax, mode="sequential", alpha=0.02)
    assert runs == [0, 1, 2]
    a, b, c = _inits(fast), _inits(recomputed), _inits(plain)
    for name in ("c1_w", "c2_w", "c3_w", "c4_w", "c1_b", "c2_b", "c3_b", "c4_b"):
        np.testing.assert_allclose(a[name], c[name], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b[name], c[name], rtol=1e-6, atol=1e-7)
    assert np.abs(a["c3_w"] - _inits(model)["c3_w"]).max() > 1e-4  # the last wave did change


def test_refreshed_emulation_equals_a_rebuilt_one():
    """``sequential`` updates its one emulation in place after each wave
    (``emulate.refresh_initializers``): every initializer equals what ``apply_plan`` gives on the
    changed model, the INT8 copies of the changed weights included."""
    from trtq.precision.emulate import EmulationConfig, apply_plan, plan_emulation, refresh_initializers

    rs = np.random.RandomState(11)
    model = _residual_net(rs)
    amax = {t: 2.0 for t in ("x", "r1", "r2", "h1", "h2", "h3", "h4", "s")}
    plan = plan_emulation(model, EmulationConfig("int8", "explicit", frozenset()), amax)
    emulated = apply_plan(plan)
    inits = {i.name: i for i in plan.model.graph.initializer}
    for name in ("c2_w", "c2_b"):
        value = numpy_helper.to_array(inits[name]) * 1.7 + 0.05
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    before = _inits(emulated)
    refresh_initializers(emulated, plan, {"c2_w", "c2_b"})
    got, want = _inits(emulated), _inits(apply_plan(plan))
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    changed = {n for n in want if not np.array_equal(before[n], want[n])}
    assert "c2_b" in changed and any(n.startswith("c2_w__trtq_int8") for n in changed), changed
