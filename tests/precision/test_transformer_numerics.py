"""Emulated values of the transformer layers against an independent numpy computation:
attention (FP32 scores and softmax, probabilities stored in FP16 or quantized before the second
product), LayerNorm (FP32 inside one normalization layer, FP16 only at its boundary, no overflow
of Pow(x - mean, 2) and TensorRT's warning said), GELU (point-wise, FP32 inside fc1's layer),
and the residual Add's quantized branch."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from precision_tiny_models import minmax_amax, run_ort
from transformer_tiny_blocks import EPS, block_inputs, encoder_block, initializer

from trtq.precision.emulate import EmulationConfig, emulate

half = lambda a: np.asarray(a, np.float32).astype(np.float16).astype(np.float32)  # noqa: E731


def fq(x: np.ndarray, amax: float) -> np.ndarray:
    """Symmetric INT8 fake quantization, scale = amax / 127, round half to even, saturate."""
    s = np.float32(amax) / np.float32(127)
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    d = x - x.mean(axis=-1, keepdims=True)
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + EPS) * gamma + beta


def ulp16(a: np.ndarray) -> np.ndarray:
    """One FP16 unit in the last place at |a| (normal range)."""
    return np.exp2(np.floor(np.log2(np.maximum(np.abs(a), 2.0**-14))) - 10)


def test_fp16_attention_keeps_scores_fp32_and_stores_probabilities_in_fp16():
    model = encoder_block()
    feeds = block_inputs(np.random.RandomState(1))
    em = emulate(model, EmulationConfig("fp16"))
    got = run_ort(em, feeds, ["q.t", "k.t", "v.t", "scores", "probs", "probs__trtq_fp16", "ctx"])
    q, k, v = got["q.t"], got["k.t"], got["v.t"]
    assert np.array_equal(q, half(q)) and np.array_equal(v, half(v))  # inputs arrive in FP16
    scores = q.astype(np.float64) @ k.astype(np.float64)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(got["scores"], half(got["scores"]))  # FP32 inside the fused layer
    scale = float(initializer(model, "attn_scale"))
    probs = softmax(scores * scale + half(feeds["mask"]))
    np.testing.assert_allclose(got["probs"], probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["probs__trtq_fp16"], half(got["probs"]))  # P stored in FP16
    want = half(half(got["probs"]).astype(np.float64) @ v)
    assert np.all(np.abs(got["ctx"] - want) <= ulp16(want))


def test_int8_attention_quantizes_q_k_probabilities_and_v_with_their_amax():
    model = encoder_block()
    rs = np.random.RandomState(2)
    amax = minmax_amax(model, [block_inputs(rs) for _ in range(4)])
    amax["probs"] = 0.5  # below the probabilities' max: saturation is exercised
    feeds = block_inputs(np.random.RandomState(3))
    em = emulate(model, EmulationConfig("int8", mha="int8"), amax)
    got = run_ort(em, feeds, ["q.t", "k.t", "v.t", "ctx"])
    scale = float(initializer(model, "attn_scale"))
    scores = fq(got["q.t"], amax["q.t"]).astype(np.float64) @ fq(got["k.t"], amax["k.t"])
    probs = softmax(scores * scale + feeds["mask"]).astype(np.float32)
    assert probs.max() > amax["probs"]
    want = fq(probs, amax["probs"]).astype(np.float64) @ fq(got["v.t"], amax["v.t"])
    np.testing.assert_allclose(got["ctx"], want, rtol=1e-4, atol=1e-5)
    # mha fp16 (default) in an INT8 build: the products stay FP32
    plain = run_ort(emulate(model, EmulationConfig("int8"), amax), feeds, ["q.t", "k.t", "v.t", "ctx"])
    exact = softmax(plain["q.t"].astype(np.float64) @ plain["k.t"] * scale + feeds["mask"]) @ plain["v.t"]
    np.testing.assert_allclose(plain["ctx"], exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ln2", ["decomposed", "op"])
def test_fp16_layernorm_is_fp32_inside_and_rounded_at_its_output(ln2):
    model = encoder_block(ln2=ln2)
    feeds = block_inputs(np.random.RandomState(4))
    em = emulate(model, EmulationConfig("fp16"))
    got = run_ort(em, feeds, ["ln1.d2", "ln1.out", "r1", "ln2.out"])
    x16 = half(feeds["x"])  # the graph input, rounded on its edge into the FP16 layer
    d = x16.astype(np.float64) - x16.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(got["ln1.d2"], d * d, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(got["ln1.d2"], half(got["ln1.d2"]))  # no FP16 inside
    for name, x in (("ln1", x16), ("ln2", got["r1"])):
        want = half(
            layernorm(x, half(initializer(model, f"{name}.gamma")), half(initializer(model, f"{name}.beta")))
        )
        assert np.all(np.abs(got[f"{name}.out"] - want) <= ulp16(want)), name


def test_fp16_decomposed_layernorm_does_not_overflow_and_the_risk_is_said(caplog, monkeypatch):
    monkeypatch.setattr("trtq.precision.emulate._LAYERNORM_WARNED", set())  # said once per process
    model = encoder_block()
    rs = np.random.RandomState(5)
    feeds = block_inputs(rs, scale=600.0)  # |x - mean| > 256: Pow would pass 65504 in FP16
    amax = minmax_amax(model, [block_inputs(rs, scale=600.0) for _ in range(2)])
    assert np.abs(feeds["x"] - feeds["x"].mean(axis=-1, keepdims=True)).max() > 256
    with caplog.at_level(logging.WARNING, logger="trtq.precision.emulate"):
        em = emulate(model, EmulationConfig("fp16+int8"), amax)
    assert "decomposed LayerNorm" in caplog.text and "ln1/mean" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trtq.precision.emulate"):
        emulate(model, EmulationConfig("fp16+int8"), amax)
    assert "decomposed LayerNorm" not in caplog.text  # not repeated for the same model and ranges
    got = run_ort(em, feeds, ["ln1.out"])["ln1.out"]
    assert np.isfinite(got).all()
    want = half(
        layernorm(
            half(feeds["x"]), half(initializer(model, "ln1.gamma")), half(initializer(model, "ln1.beta"))
        )
    )
    assert np.all(np.abs(got - want) <= 2 * ulp16(want))
    # what an unfused FP16 Pow would have produced
    x16 = half(feeds["x"])
    with np.errstate(over="ignore"):
        assert not np.isfinite(half(np.square(x16 - x16.mean(axis=-1, keepdims=True)))).all()


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_fp16_gelu_is_pointwise_in_fp32_inside_fc1(gelu):
    model = encoder_block(gelu=gelu)
    em = emulate(model, EmulationConfig("fp16"))
    got = run_ort(em, block_inputs(np.random.RandomState(6)), ["fc1.out", "gelu.out"])
    x = got["fc1.out"].astype(np.float64)
    assert not np.array_equal(got["fc1.out"], half(got["fc1.out"]))  # internal: not rounded
    if gelu == "erf":
        g = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    else:
        g = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    want = half(g)
    assert np.all(np.abs(got["gelu.out"] - want) <= ulp16(want))


def test_residual_add_quantizes_its_branch_only():
    model = encoder_block()
    rs = np.random.RandomState(7)
    amax = minmax_amax(model, [block_inputs(rs) for _ in range(4)])
    amax["o.out"] *= 0.5  # saturate the branch: the Q/DQ is visible
    feeds = block_inputs(np.random.RandomState(8))
    got = run_ort(emulate(model, EmulationConfig("int8"), amax), feeds, ["o.out", "r1", "fc2.out", "y"])
    np.testing.assert_allclose(got["r1"], fq(got["o.out"], amax["o.out"]) + feeds["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        got["y"], got["r1"] + fq(got["fc2.out"], amax["fc2.out"]), rtol=1e-6, atol=1e-6
    )


def test_layerwise_attention_and_residual_branch_alone_on_fp32_inputs():
    from trtq.precision.emulate import build_layerwise_model, plan_emulation

    model = encoder_block()
    rs = np.random.RandomState(10)
    amax = minmax_amax(model, [block_inputs(rs) for _ in range(4)])
    feeds = block_inputs(np.random.RandomState(11))
    fp16 = plan_emulation(model, EmulationConfig("fp16"), None)
    int8 = plan_emulation(model, EmulationConfig("int8", mha="int8"), amax)
    lw, (map16, map8) = build_layerwise_model([fp16, int8])
    got = run_ort(lw, feeds, ["q.t", "k.t", "v.t", "o.out", "r1", map16["ctx"], map8["ctx"], map8["r1"]])
    q, k, v = got["q.t"], got["k.t"], got["v.t"]  # FP32 reference tensors: the layer's inputs
    scale = float(initializer(model, "attn_scale"))
    # FP16 attention alone: inputs rounded on their edges, P stored in FP16, output rounded
    p16 = softmax(half(q).astype(np.float64) @ half(k) * scale + half(feeds["mask"]))
    want16 = half(half(p16).astype(np.float64) @ half(v))
    assert np.all(np.abs(got[map16["ctx"]] - want16) <= ulp16(want16))
    # INT8 attention alone: Q, K, P and V quantized with their amax
    p8 = softmax(fq(q, amax["q.t"]).astype(np.float64) @ fq(k, amax["k.t"]) * scale + feeds["mask"])
    want8 = fq(p8.astype(np.float32), amax["probs"]).astype(np.float64) @ fq(v, amax["v.t"])
    np.testing.assert_allclose(got[map8["ctx"]], want8, rtol=1e-4, atol=1e-5)
    # the residual Add's layer alone: its branch quantized inside, the residual stream not
    assert map8["r1"] != "r1"
    branch = got[map8["r1"]] - feeds["x"]
    assert np.abs(branch - got["o.out"]).max() > 0  # weights and input quantized: a different branch
    np.testing.assert_allclose(branch, fq(branch, amax["o.out"]), rtol=0, atol=2e-6)  # on o.out's grid
