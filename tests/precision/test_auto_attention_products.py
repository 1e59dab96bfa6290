"""``--method auto`` measures the inputs of the attention products (Q, K, the softmax output, V),
whatever ``--mha`` the export will use, and leaves every other tensor's choice as it was.

Independent computation: the documented proxy of a product of two activations written out in
numpy on the FP32 tensors (ONNX Runtime), ``sum w (q(a) - a)^2 / sum w a^2`` with ``w`` the
summed squares of the other operand's values that meet each element."""

from __future__ import annotations

import numpy as np
import pytest
from precision_tiny_models import run_ort
from transformer_tiny_blocks import block_inputs, encoder_block

from trtq.calib.auto import AutoSearch, AutoSettings, candidates, fake_quantize, find_consumers
from trtq.calib.run import calibrate, compute_amax

# tensor -> (consumer, kind, the other operand): A = q.t [.., S, HD] @ B = k.t [.., HD, S];
# A = probs [.., S, S] @ B = v.t [.., S, HD]
PRODUCTS = {
    "q.t": ("bmm1", "matmul_a", "k.t"),
    "k.t": ("bmm1", "matmul_b", "q.t"),
    "probs": ("bmm2", "matmul_a", "v.t"),
    "v.t": ("bmm2", "matmul_b", "probs"),
}


@pytest.fixture(scope="module")
def block():
    model = encoder_block()
    rs = np.random.RandomState(5)
    batches = [block_inputs(rs, scale=2.0) for _ in range(8)]
    return model, batches


def _independent_errors(kind: str, a: np.ndarray, other: np.ndarray, amaxes: list[float]) -> np.ndarray:
    """Relative weighted error of ``a`` per candidate, every element of every sample."""
    if kind == "matmul_a":  # a[.., m, k] meets row k of B
        w = np.broadcast_to((other.astype(np.float64) ** 2).sum(axis=-1)[..., None, :], a.shape)
    else:  # b[.., k, n] meets column k of A
        w = np.broadcast_to((other.astype(np.float64) ** 2).sum(axis=-2)[..., :, None], a.shape)
    energy = (w * a.astype(np.float64) ** 2).sum()
    return np.array(
        [(w * (fake_quantize(a, amax).astype(np.float64) - a) ** 2).sum() / energy for amax in amaxes]
    )


def test_auto_measures_the_attention_product_inputs(block):
    model, batches = block
    result = calibrate(model, batches, method="auto", threads=1)
    fp32 = [run_ort(model, b, list(PRODUCTS)) for b in batches]
    for t, (node, kind, other) in PRODUCTS.items():
        choice = result.choices[t]
        assert choice["candidate"] != "fallback", t
        assert choice["consumers"] == [f"{node}:{kind}"]
        cands = candidates(result.histograms[t])
        a = np.concatenate([f[t] for f in fp32])
        b = np.concatenate([f[other] for f in fp32])
        independent = _independent_errors(kind, a, b, [v for _, v in cands])
        # every element is kept (a sample has fewer than auto_positions): the proxy is exact
        measured = [choice["errors_by_candidate"][label] for label, _ in cands]
        np.testing.assert_allclose(measured, independent, rtol=1e-3)
        assert choice["amax"] == cands[int(np.argmin(independent))][1] == result.amax[t]
    # the probabilities' measured threshold is not the entropy2 one the fallback gave them
    assert result.amax["probs"] != compute_amax(result.histograms, "entropy2")["probs"]


def test_the_other_tensors_keep_the_choices_they_had_without_the_products(block):
    """The products' consumers come last, so the other tensors' seeded element draws (sampled:
    fewer positions than elements) and hence their errors are those of a search without them."""
    model, batches = block
    params = {"auto_positions": 4}
    result = calibrate(model, batches, method="auto", params=params, threads=1)
    without = find_consumers(model, mha="fp16")
    assert not set(PRODUCTS) & set(without)
    search = AutoSearch(result.histograms, without, AutoSettings(positions=4))
    names = search.needed()
    for b in batches:
        search.add({**run_ort(model, b, [n for n in names if n not in b]), **b})
    amax, choices = search.choose(compute_amax(result.histograms, "entropy2"))
    for t in without:
        assert result.choices[t]["errors_by_candidate"] == choices[t]["errors_by_candidate"], t
        assert result.amax[t] == amax[t], t
