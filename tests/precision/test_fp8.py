"""FP8 E4M3: rounding checked against an independent computation of E4M3 (every bit pattern
decoded by hand), ONNX Runtime's QuantizeLinear-19/DequantizeLinear-19, the emulation against a
numpy fake-quant of a tiny model, the export and the CLI end to end."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from precision_tiny_models import (
    WIDE,
    make_model,
    minmax_amax,
    run_ort,
    two_conv_model,
    two_conv_workspace,
    vi,
)

from trtq._core.errors import InputError
from trtq.precision import qdq
from trtq.precision.emulate import EmulationConfig, emulate
from trtq.precision.export import export_qdq

# -- the independent E4M3 ------------------------------------------------------------------------


def _decode(code: int) -> float:
    """E4M3FN bit pattern -> value, from the format's definition: sign, 4-bit exponent (bias 7),
    3-bit mantissa; exponent 0 is subnormal (m/8 * 2**-6); S.1111.111 is NaN; no infinity."""
    sign = -1.0 if code & 0x80 else 1.0
    exp, man = (code >> 3) & 0xF, code & 0x7
    if exp == 0xF and man == 0x7:
        return float("nan")
    if exp == 0:
        return sign * (man / 8.0) * 2.0**-6
    return sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)


ALL = [_decode(c) for c in range(256)]
FINITE = sorted({v for v in ALL if not np.isnan(v)})  # -0 and +0 collapse to one 0.0
CODE_OF = {v: c for c in range(256) for v in [ALL[c]] if not np.isnan(v) and not (v == 0 and c)}


def _encode_ref(x: float) -> float:
    """Round ``x`` to the nearest finite E4M3 value, ties to the even code, saturating to +-448."""
    if np.isnan(x):
        return float("nan")
    if x >= 448.0:
        return 448.0
    if x <= -448.0:
        return -448.0
    best = min(FINITE, key=lambda v: abs(v - x))
    ties = [v for v in FINITE if abs(v - x) == abs(best - x)]
    if len(ties) > 1:
        best = next(v for v in ties if CODE_OF[v] % 2 == 0)
    return best


def test_the_reference_decoder_knows_the_format():
    assert sum(np.isnan(v) for v in ALL) == 2  # 0x7F and 0xFF
    assert max(FINITE) == 448.0 and min(FINITE) == -448.0
    assert ALL[0x01] == 2.0**-9 and ALL[0x08] == 2.0**-6 and ALL[0x07] == 7 / 8 * 2.0**-6
    assert len(FINITE) == 253  # 256 codes - 2 NaN - one duplicate zero


def _points() -> np.ndarray:
    pos = sorted(v for v in FINITE if v >= 0)
    mids = [(a + b) / 2 for a, b in pairwise(pos)]  # exact ties between neighbours
    quarter = [a + (b - a) / 4 for a, b in pairwise(pos)]
    beyond = [448.0 + 1e-3, 463.9, 464.0, 464.1, 480.0, 1e4, 3.4e38]
    subnormal = [2.0**-10, 3 * 2.0**-11, 2.0**-11, 1e-6, 2.0**-6 - 2.0**-11]
    pts = np.array(pos + mids + quarter + beyond + subnormal, dtype=np.float64)
    pts = pts[pts.astype(np.float32) == pts]  # only points float32 holds exactly
    return np.concatenate([pts, -pts]).astype(np.float32)


def _ort_qdq(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fp8",
        [vi("x", [len(x)])],
        [vi("y", [len(x)])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), qdq.zero_point("z", qtype="fp8")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model)
    return run_ort(model, {"x": x})["y"]


def test_round_fp8_and_onnxruntime_match_the_independent_e4m3():
    x = _points()
    want = np.array([_encode_ref(float(v)) for v in x], dtype=np.float32)
    np.testing.assert_array_equal(qdq.round_fp8(x), want)
    np.testing.assert_array_equal(_ort_qdq(x), want)
    # every representable value maps to itself, and the bit patterns round-trip
    codes = [c for c in range(256) if not np.isnan(ALL[c]) and c != 0x80]
    vals = np.array([ALL[c] for c in codes], dtype=np.float32)
    np.testing.assert_array_equal(qdq.round_fp8(vals), vals)
    np.testing.assert_array_equal(qdq.fp8_bits(vals), np.array(codes, dtype=np.uint8))


def test_saturation_subnormals_ties_and_nan():
    r = qdq.round_fp8(np.array([500, -1e30, 2.0**-10, 3 * 2.0**-10, 17.0, 19.0, np.nan], np.float32))
    # 2**-10 is halfway between 0 and 2**-9: ties to the even code (0); 3 * 2**-10 -> 2**-8 (code 2)
    # 17 is halfway between 16 (0x50) and 18 (0x51): even -> 16; 19 between 18 and 20 -> 20 (0x52)
    np.testing.assert_array_equal(r[:6], [448, -448, 0, 2.0**-8, 16, 20])
    assert np.isnan(r[6])


def test_scaled_quantization_matches_onnxruntime():
    rs = np.random.RandomState(0)
    x = (rs.randn(4096) * 3).astype(np.float32)
    amax = 5.0
    scale = qdq.activation_scale(amax, "fp8")
    assert scale == np.float32(np.float32(5.0) / np.float32(112.0))  # amax two binades below 448
    want = qdq.round_fp8(x / np.float32(scale)) * np.float32(scale)
    np.testing.assert_array_equal(_ort_qdq(x, scale), want)


# -- emulation and export ------------------------------------------------------------------------


def _conv_matmul_model() -> onnx.ModelProto:
    rs = np.random.RandomState(3)
    inits = {
        "w": (rs.randn(20, 17, 3, 3) * 0.2).astype(np.float32),  # > 16 channels: an FP8 Conv
        "b": (rs.randn(20) * 0.1).astype(np.float32),
        "m": (rs.randn(6, 5) * 0.5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "m"], ["y"], name="mm"),
    ]
    return make_model(nodes, [vi("x", [1, 17, 8, 8])], [vi("y", [1, 20, 6, 5])], inits)


def _fp8_weights(w: np.ndarray, axis: int) -> np.ndarray:
    """Reference FP8 weights: per channel along ``axis``, every divisor ``448 * 2**(-j/8)`` tried
    with numpy (``round_fp8``, checked against the bit-level decoder above), the one with the
    smallest squared error kept (the first on a tie)."""
    w = np.asarray(w, np.float32)
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    out = np.empty_like(rows)
    for c, row in enumerate(rows):
        a = np.abs(row).max()
        best = None
        for j in range(8):
            s = np.float32(a / np.float32(448.0 * 2.0 ** (-j / 8)))
            q = qdq.round_fp8(row / s) * s
            err = float(np.square(q.astype(np.float64) - row).sum())
            if best is None or err < best[0]:
                best = (err, q)
        out[c] = best[1]
    return np.moveaxis(out.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)


def _fq(x: np.ndarray, amax: float) -> np.ndarray:
    s = np.float32(np.float32(amax) / np.float32(112))
    return qdq.round_fp8(np.asarray(x, np.float32) / s) * s


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    out = np.zeros((n, cout, h - k + 1, wd - k + 1), np.float64)
    for i in range(h - k + 1):
        for j in range(wd - k + 1):
            patch = x[:, :, i : i + k, j : j + k].astype(np.float64)
            out[:, :, i, j] = np.einsum("ncij,ocij->no", patch, w.astype(np.float64))
    return out + b[None, :, None, None]


def test_emulated_fp8_model_equals_numpy_fake_quant():
    model = _conv_matmul_model()
    rs = np.random.RandomState(7)
    batches = [{"x": rs.randn(1, 17, 8, 8).astype(np.float32)} for _ in range(2)]
    amax = minmax_amax(model, batches)
    emu = emulate(model, EmulationConfig("fp8"), amax)
    assert any(o.domain in ("", "ai.onnx") and o.version >= 19 for o in emu.opset_import)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    x = batches[0]["x"]
    # per-output-channel weight scales: the Conv's rows (axis 0), the MatMul's columns (axis 1,
    # one per output feature), each on its best grid
    wq, mq = _fp8_weights(inits["w"], 0), _fp8_weights(inits["m"], 1)
    np.testing.assert_allclose(qdq.fake_quantize_weight(inits["w"], 0, "fp8"), wq, rtol=1e-6, atol=0)
    r = np.maximum(_conv2d(_fq(x, amax["x"]), wq, inits["b"]), 0).astype(np.float32)
    want = _fq(r, amax["r"]).astype(np.float64) @ mq.astype(np.float64)
    got = run_ort(emu, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fp8_export_runs_in_onnxruntime_like_the_emulation(rng):
    two_conv = two_conv_model(**WIDE)
    batches = [{"x": rng.randn(1, WIDE["cin"], 6, 6).astype(np.float32)} for _ in range(3)]
    amax = minmax_amax(two_conv, batches)
    q = export_qdq(two_conv, amax, fp8=True)
    onnx.checker.check_model(q, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == 19 for o in q.opset_import)
    inits = {i.name: i for i in q.graph.initializer}
    dqs = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    weight_dqs = [n for n in dqs if inits.get(n.input[0]) is not None]
    assert len(weight_dqs) == 2
    for n in weight_dqs:  # per output channel: one scale per Conv filter, on axis 0
        w = inits[n.input[0]]
        assert w.data_type == TensorProto.FLOAT8E4M3FN
        assert tuple(inits[n.input[1]].dims) == (w.dims[0],)
        assert [a.i for a in n.attribute if a.name == "axis"] == [0]
    assert all(inits[n.input[2]].data_type == TensorProto.FLOAT8E4M3FN for n in dqs)
    feeds = batches[0]
    want = run_ort(emulate(two_conv, EmulationConfig("fp8"), amax), feeds)["y"]
    np.testing.assert_allclose(run_ort(q, feeds)["y"], want, rtol=1e-6, atol=1e-6)
    # with FP16: still runs, close to FP32
    q16 = export_qdq(two_conv, amax, fp16=True, fp8=True)
    onnx.checker.check_model(q16)
    np.testing.assert_allclose(run_ort(q16, feeds)["y"], want, rtol=2e-2, atol=2e-2)


def test_fp8_activations_keep_values_beyond_the_calibrated_amax():
    """Held-out values up to 4x the calibration's largest are not saturated: E4M3's relative step
    (<= 2**-4) holds at 1x, 3x and 4x amax; 5x saturates at 4x."""
    amax = 2.5
    s = np.float32(qdq.activation_scale(amax, "fp8"))
    x = np.array([0.3, 1.0, 3.0, 4.0], np.float32) * np.float32(amax)
    got = qdq.round_fp8(x / s) * s
    np.testing.assert_allclose(got, x, rtol=2.0**-4)
    assert qdq.round_fp8(np.float32(5 * amax) / s) * s == pytest.approx(4 * amax)


def test_fp8_weights_per_channel_keep_a_small_channel_precise():
    """A filter 1e5 times smaller than the largest: per channel it keeps E4M3's relative step
    (<= 2**-4 of each value above the normals' bottom); per tensor (max|W| / 448 for all) it lands
    in the subnormals, steps of 2**-9 * scale, coarser than the filter's own values."""
    rs = np.random.RandomState(0)
    w = rs.randn(2, 8, 3, 3).astype(np.float32)
    w[1] *= np.float32(1e-5)
    per_channel = qdq.fake_quantize_weight(w, 0, "fp8")
    per_tensor = qdq.fake_quantize_weight(w, None, "fp8")
    small = np.abs(w[1]) > np.abs(w[1]).max() * 2.0**-6  # the normal range of its own scale
    rel = np.abs(per_channel[1] - w[1])[small] / np.abs(w[1])[small]
    assert rel.max() <= 2.0**-4 + 1e-6
    step = np.abs(w).max() / 448 * 2.0**-9  # per tensor: the smallest subnormal step
    assert step > np.abs(w[1]).max() / 4
    rel_tensor = np.abs(per_tensor[1] - w[1])[small] / np.abs(w[1])[small]
    assert rel_tensor.max() > 0.25 > 2.0**-4
    np.testing.assert_allclose(per_channel[0], per_tensor[0], rtol=2.0**-4)  # the largest filter


def test_fp8_weight_grid_is_the_channels_smallest_rounding_error():
    """Each channel's scale is max|w_c| / d with d one of the 8 grid points of E4M3's top binade,
    the one whose rounding error is smallest (brute force with numpy as the reference); the chosen
    grid never rounds worse than the plain max|w_c| / 448, and strictly better for most channels."""
    rs = np.random.RandomState(4)
    w = (rs.randn(64, 27) * rs.uniform(0.01, 3, (64, 1))).astype(np.float32)
    got = qdq.fake_quantize_weight(w, 0, "fp8")
    np.testing.assert_allclose(got, _fp8_weights(w, 0), rtol=1e-6, atol=0)
    values, scale = qdq.quantize_weight_fp8(w, 0)
    ratios = np.abs(w).max(axis=1) / scale
    grid = 448.0 * 2.0 ** (-np.arange(8) / 8)
    assert np.isclose(ratios[:, None], grid[None, :], rtol=1e-5).any(axis=1).all()
    s448 = (np.abs(w).max(axis=1) / np.float32(448))[:, None]
    plain = np.square((qdq.round_fp8(w / s448) * s448).astype(np.float64) - w).sum(axis=1)
    chosen = np.square(got.astype(np.float64) - w).sum(axis=1)
    assert (chosen <= plain * (1 + 1e-9)).all() and (chosen < plain).mean() > 0.5


def _fp8_conv_kinds() -> onnx.ModelProto:
    """x -> 3x3 Conv -> depthwise 3x3 -> 7x7 Conv -> ConvTranspose -> 1x1 Conv -> 1x1 Conv to 8
    channels -> y, 24 channels everywhere else."""
    rs = np.random.RandomState(5)
    c = 24
    inits = {
        "w1": rs.randn(c, c, 3, 3).astype(np.float32) * 0.2,
        "wd": rs.randn(c, 1, 3, 3).astype(np.float32),
        "w7": rs.randn(c, c, 7, 7).astype(np.float32) * 0.05,
        "wt": rs.randn(c, c, 2, 2).astype(np.float32) * 0.2,
        "wo": rs.randn(c, c, 1, 1).astype(np.float32) * 0.2,
        "wn": rs.randn(8, c, 1, 1).astype(np.float32) * 0.2,
    }
    pad1, pad3 = {"pads": [1, 1, 1, 1]}, {"pads": [3, 3, 3, 3]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv3x3", kernel_shape=[3, 3], **pad1),
        helper.make_node("Conv", ["a", "wd"], ["b"], name="depthwise", group=c, kernel_shape=[3, 3], **pad1),
        helper.make_node("Conv", ["b", "w7"], ["c"], name="conv7x7", kernel_shape=[7, 7], **pad3),
        helper.make_node(
            "ConvTranspose", ["c", "wt"], ["d"], name="deconv", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["d", "wo"], ["e"], name="conv1x1", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["e", "wn"], ["y"], name="narrow", kernel_shape=[1, 1]),
    ]
    return make_model(nodes, [vi("x", [1, c, 8, 8])], [vi("y", [1, 8, 16, 16])], inits)


def test_fp8_leaves_the_convolutions_tensorrt_has_no_fp8_kernel_for_in_float():
    """INT8 quantizes all six layers; FP8 only the plain 3x3 and the wide 1x1 convolution: the
    depthwise, the 7x7 (49 kernel elements), the ConvTranspose and the 8-output-channel Conv stay
    float, and the output is exactly a float run of the same graph with only those two layers'
    input and weights fake-quantized."""
    model = _fp8_conv_kinds()
    rs = np.random.RandomState(1)
    batches = [{"x": rs.randn(1, 24, 8, 8).astype(np.float32)} for _ in range(2)]
    amax = minmax_amax(model, batches)

    def quantized_inputs(q: onnx.ModelProto) -> set[str]:
        produced = {o: n for n in q.graph.node for o in n.output}
        return {
            n.name
            for n in q.graph.node
            if n.op_type in ("Conv", "ConvTranspose")
            and n.input[0] in produced
            and produced[n.input[0]].op_type == "DequantizeLinear"
        }

    int8, fp8 = export_qdq(model, amax), export_qdq(model, amax, fp8=True)
    assert quantized_inputs(int8) == {"conv3x3", "depthwise", "conv7x7", "deconv", "conv1x1", "narrow"}
    assert quantized_inputs(fp8) == {"conv3x3", "conv1x1"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    fq = {"w1": inits["w1"], "wo": inits["wo"]}
    for name, w in fq.items():  # fake-quantized weights, per output channel (axis 0)
        fq[name] = _fp8_weights(w, 0)
    for init in ref.graph.initializer:
        if init.name in fq:
            init.CopyFrom(onnx.numpy_helper.from_array(fq[init.name], init.name))
    x = batches[0]["x"]
    # the float graph with the two FP8 layers' inputs fake-quantized, run as two pieces
    d = run_ort(_prefix(ref, "d"), {"x": _fq(x, amax["x"])})["d"]
    want = run_ort(_suffix(ref, "d"), {"d": _fq(d, amax["d"])})["y"]
    np.testing.assert_allclose(run_ort(fp8, {"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    emu = emulate(model, EmulationConfig("fp8"), amax)
    np.testing.assert_allclose(run_ort(emu, {"x": x})["y"], want, rtol=1e-4, atol=1e-4)


def _prefix(model: onnx.ModelProto, out: str) -> onnx.ModelProto:
    return onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(["x"], [out])


def _suffix(model: onnx.ModelProto, inp: str) -> onnx.ModelProto:
    return onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([inp], ["y"])


def test_fp8_export_needs_ranges(two_conv):
    with pytest.raises(InputError):
        export_qdq(two_conv, {}, fp8=True, fp16=True)


# -- CLI -------------------------------------------------------------------------------------------


def _invoke(*args):
    from trtq.precision.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_compare_fp8_end_to_end(tmp_path):
    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    for precision in ("fp8", "fp8+fp16"):
        res = _invoke(
            "compare", model, "--data", data, "--cache", cache, "--precision", precision,
            "--mode", "both", "--json", "-", "-q",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        assert [r["precision"] for r in doc["runs"]] == [precision, precision]
        assert all(r["placement"] == "explicit" for r in doc["runs"])
        out = doc["runs"][0]["outputs"][0]
        assert out["cosine"] > 0.99


def test_export_fp8_cli(tmp_path):
    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    out = tmp / "m.fp8.onnx"
    res = _invoke("export", model, "--fp8", "--cache", cache, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    q = onnx.load(str(out))
    assert any(i.data_type == TensorProto.FLOAT8E4M3FN for i in q.graph.initializer)
    x = np.load(sorted((tmp / "data").glob("*.npy"))[0]) if (tmp / "data").exists() else None
    if x is not None:
        run_ort(q, {"x": x.reshape(1, WIDE["cin"], 6, 6).astype(np.float32)})
    res = _invoke("export", model, "--fp8", "--int8", "--cache", cache, "-o", out)
    assert res.exit_code != 0 and "exclusive" in res.output


def test_bisect_and_pin_fp8_end_to_end(tmp_path):
    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    pins = tmp / "pins.json"
    res = _invoke(
        "bisect", model, "--data", data, "--precision", "fp8", "--cache", cache,
        "--threshold", "0.99999", "-o", pins, "--json", "-", "-q",
    )  # fmt: skip
    doc = json.loads(pins.read_text())
    assert doc["settings"]["precision"] == "fp8" and doc["settings"]["amax"], res.output
    out = tmp / "pinned.onnx"
    res = _invoke("pin", model, "--pins", pins, "-o", out, "--json", "-", "-q")
    assert res.exit_code in (0, 1), res.output
    applied = onnx.load(str(out))
    assert any(o.domain in ("", "ai.onnx") and o.version == 19 for o in applied.opset_import)
