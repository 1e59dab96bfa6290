"""Threshold methods against independent brute-force computations on synthetic distributions."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.calib.histogram import HistogramSet
from trtq.calib.methods import EMPTY_AMAX, available_methods, get_method
from trtq.calib.methods.entropy2 import kl_divergences
from trtq.calib.methods.mse import squared_errors

RNG = np.random.default_rng(42)
DISTRIBUTIONS = {
    "gaussian": RNG.standard_normal(300_000),
    "laplace": RNG.laplace(size=300_000),
    "half_normal_relu": np.maximum(RNG.standard_normal(300_000), 0),
    "gaussian_with_outliers": np.concatenate([RNG.standard_normal(300_000), RNG.uniform(30, 60, size=20)]),
    "uniform": RNG.uniform(-1, 1, size=100_000),
}


def _hist(x: np.ndarray, bins: int = 2048):
    hs = HistogramSet(["t"], bins)
    hs.collect({"t": x.astype(np.float32)})
    return hs["t"]


def _brute_kl(counts: np.ndarray, levels: int = 128) -> np.ndarray:
    """KL(P||Q) written directly from the definition, one candidate at a time."""
    h = counts.astype(np.float64)
    out = []
    for i in range(levels, len(h) + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        raw = h[:i]
        level = (np.arange(i) * levels) // i
        q = np.zeros(i)
        for lv in range(levels):
            members = level == lv
            nonempty = members & (raw > 0)
            if nonempty.any():
                q[nonempty] = raw[members].sum() / nonempty.sum()
        if q.sum() == 0:
            out.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        m = p > 0
        out.append(np.inf if np.any(q[m] == 0) else float(np.sum(p[m] * np.log(p[m] / q[m]))))
    return np.array(out)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_entropy2_matches_brute_force_kl(name):
    h = _hist(DISTRIBUTIONS[name], 512)  # 512 bins keeps the brute force quick
    fast = kl_divergences(h.counts, 128, 128)
    slow = _brute_kl(h.counts)
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)
    i = 128 + int(np.argmin(slow))
    plain = get_method("entropy2").amax(h.counts, h.edges, max_abs=h.max_abs, skip_zero_bin=False)
    assert plain == pytest.approx(min(h.edges[i], h.max_abs))


def test_entropy2_clips_outliers_but_not_the_bulk():
    x = DISTRIBUTIONS["gaussian_with_outliers"]
    h = _hist(x)
    amax = get_method("entropy2").amax(h.counts, h.edges, max_abs=h.max_abs)
    assert 3.0 < amax < h.max_abs / 2  # the 20 outliers up to 60 do not set the range


def _true_mse(x: np.ndarray, t: float) -> float:
    a = np.abs(x)
    s = t / 127
    return float(np.mean((a - np.minimum(np.round(a / s), 127) * s) ** 2))


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_mse_is_near_the_brute_force_optimum_on_raw_samples(name):
    x = DISTRIBUTIONS[name].astype(np.float32)
    h = _hist(x)
    amax = get_method("mse").amax(h.counts, h.edges, max_abs=h.max_abs)
    grid = np.linspace(h.max_abs / 200, h.max_abs, 600)
    errs = np.array([_true_mse(x, t) for t in grid])
    best = errs.min()
    assert _true_mse(x, amax) <= best * 1.02 + 1e-12


def _all_candidate_errors(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """mse's model error for every candidate edge, each written out over all bins (no pruning):
    uniform values within a bin, rounding error integrated exactly below the candidate, clipping
    above it."""

    def round_err(u: np.ndarray) -> np.ndarray:  # integral over [0, u] of (v - round(v))^2
        k, f = np.floor(u), u - np.floor(u)
        return k / 12 + np.where(f <= 0.5, f**3 / 3, 1 / 24 + ((f - 1) ** 3 + 0.125) / 3)

    h, lo, hi = counts.astype(np.float64), edges[:-1].astype(np.float64), edges[1:].astype(np.float64)
    out = []
    for t in hi:
        s = t / 127
        below = hi <= t
        rounding = s**3 * (round_err(hi / s) - round_err(lo / s))
        clipped = ((hi - t) ** 3 - (lo - t) ** 3) / 3
        out.append(float(np.sum(h * np.where(below, rounding, clipped) / (hi - lo))))
    return np.array(out)


# Heavy tails whose best threshold clips a fifth (student-t, 3 dof) or a tenth (two scales) of its
# error: skipping a candidate on less than its whole clipped error would lose the winner.
HEAVY_TAILS = {
    "student_t3": RNG.standard_t(3, size=100_000),
    "two_scales": np.concatenate([RNG.standard_normal(100_000), 8 * RNG.standard_normal(2000)]),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS) + sorted(HEAVY_TAILS))
def test_mse_skips_only_candidates_that_cannot_win(name):
    """The kernel stops summing a candidate once its partial error (clipped, then rounding)
    exceeds the best total: the skipped ones (inf) are worse than the minimum, the others equal
    the full sum, and the winner is the full evaluation's first minimum."""
    h = _hist({**DISTRIBUTIONS, **HEAVY_TAILS}[name], 512)
    fast = squared_errors(h.counts.astype(np.float64), h.edges.astype(np.float64))
    full = _all_candidate_errors(h.counts, h.edges)
    kept = np.isfinite(fast)
    np.testing.assert_allclose(fast[kept], full[kept], rtol=1e-9, atol=1e-300)
    assert np.all(full[~kept] > full.min())
    assert (~kept).sum() > len(full) // 10  # the pruning does happen
    assert int(np.argmin(fast)) == int(np.argmin(full))
    # candidates above the winner clip little: their rounding error is what cuts them short
    above = ~kept[int(np.argmin(full)) + 1 :]
    if len(above) >= 10:  # (uniform's winner is its top bins)
        assert above.mean() > 0.9


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_is_within_one_bin_of_numpy(name, p):
    x = DISTRIBUTIONS[name].astype(np.float32)
    h = _hist(x)
    amax = get_method("percentile").amax(h.counts, h.edges, max_abs=h.max_abs, percentile=p)
    ref = np.percentile(np.abs(x), p)
    width = h.edges[1]
    assert ref <= amax + 1e-6 <= ref + width + 2e-6 or amax == pytest.approx(h.max_abs)
    # at least p% of the values lie at or below the threshold
    assert np.mean(np.abs(x) <= amax) >= p / 100 - 1e-9


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_minmax_is_the_exact_max(name):
    x = DISTRIBUTIONS[name].astype(np.float32)
    h = _hist(x)
    assert get_method("minmax").amax(h.counts, h.edges, max_abs=h.max_abs) == float(np.abs(x).max())


def test_registry_and_empty_histograms():
    assert {m.name for m in available_methods()} >= {"entropy2", "minmax", "percentile", "mse"}
    with pytest.raises(InputError, match="entropy2, minmax, mse, percentile"):
        get_method("kl")
    for m in available_methods():
        assert m.amax(np.zeros(2048, np.int64), np.linspace(0, 1, 2049), max_abs=0.0) == EMPTY_AMAX
    with pytest.raises(InputError, match="percentile"):
        h = _hist(DISTRIBUTIONS["uniform"])
        get_method("percentile").amax(h.counts, h.edges, max_abs=h.max_abs, percentile=120)


def test_entropy2_leaves_the_zero_bin_out_by_default():
    """A ReLU output is mostly exact zeros; they must not drag the threshold to the first candidates."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal(400_000), 0).astype(np.float32)  # ~50 % exact zeros
    x[: len(x) // 3] = 0  # ~67 % zeros, as after a ReLU on a sparse feature map
    h = _hist(x)
    m = get_method("entropy2")
    with_zeros = m.amax(h.counts, h.edges, max_abs=h.max_abs, skip_zero_bin=False)
    without = m.amax(h.counts, h.edges, max_abs=h.max_abs)
    emptied = h.counts.copy()
    emptied[0] = 0  # the plain search (checked against brute force above) on the histogram without bin 0
    assert without == m.amax(emptied, h.edges, max_abs=h.max_abs, skip_zero_bin=False)
    assert with_zeros < without / 2  # the zero spike drags the plain search towards its first candidates
    nonzero = x[x != 0]
    assert np.mean(nonzero > without) < 0.01 < np.mean(nonzero > with_zeros)


# -- degenerate histograms: the same documented result under every method -------------------------
METHODS = ["entropy2", "minmax", "mse", "percentile"]


@pytest.mark.parametrize("method", METHODS)
def test_empty_histogram_gives_empty_amax(method):
    """No finite value at all (an unseen tensor, or only NaN/Inf)."""
    hs = HistogramSet(["t"])
    hs.collect({"t": np.array([np.nan, np.inf, -np.inf], np.float32)})
    h = hs["t"]
    m = get_method(method)
    assert m.amax(h.counts, h.edges, max_abs=h.max_abs) == EMPTY_AMAX
    assert m.fn(h.counts, h.edges, max_abs=h.max_abs) == EMPTY_AMAX  # the pure function alone too


@pytest.mark.parametrize("method", METHODS)
def test_only_zeros_like_an_attention_mask_gives_empty_amax(method):
    """0 and -inf: the -inf is never binned, the zeros fill bin 0 and the range stays 0."""
    mask = np.where(np.arange(64) % 3 == 0, -np.inf, 0.0).astype(np.float32)
    h = _hist(mask)
    assert h.upper == 0.0 and h.max_abs == 0.0 and h.counts[0] == 42 and h.nonfinite == 22
    m = get_method(method)
    assert m.amax(h.counts, h.edges, max_abs=h.max_abs) == EMPTY_AMAX
    assert m.fn(h.counts, h.edges, max_abs=h.max_abs) == EMPTY_AMAX
    assert m.amax(h.counts, h.edges, max_abs=h.max_abs, skip_zero_bin=False) == EMPTY_AMAX


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [3.0, 3.001, 0.7, 1e-30, 6e4])
def test_constant_tensor_single_bin_gives_its_exact_value(method, value):
    h = _hist(np.full(1000, -value, np.float32))
    assert np.count_nonzero(h.counts) == 1
    exact = float(np.float32(value))
    m = get_method(method)
    assert m.amax(h.counts, h.edges, max_abs=h.max_abs) == exact
    assert m.fn(h.counts, h.edges, max_abs=h.max_abs) == exact


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("j", [0, 1, 127, 128, 300, 2047])
def test_single_nonempty_bin_of_a_synthetic_histogram_gives_max_abs(method, j):
    counts = np.zeros(2048, np.int64)
    counts[j] = 5
    edges = np.linspace(0.0, 4.0, 2049)
    max_abs = float(edges[j] + 0.3 * (edges[1] - edges[0]))  # inside bin j
    m = get_method(method)
    assert m.amax(counts, edges, max_abs=max_abs) == max_abs
    assert m.amax(counts, edges, max_abs=max_abs, skip_zero_bin=False) == max_abs


def test_compute_amax_on_a_mask_tensor_beside_a_normal_one():
    from trtq.calib.run import compute_amax

    hs = HistogramSet(["mask", "fill", "zeros", "x"])
    lowest = np.finfo(np.float32).min
    hs.collect(
        {
            "mask": np.array([0, -np.inf, 0, 0], np.float32),
            "fill": np.array([0.5, lowest, -0.25, 0], np.float32),
            "zeros": np.zeros(4, np.float32),
            "x": DISTRIBUTIONS["gaussian"],
        }
    )
    for method in METHODS:
        amax = compute_amax(hs, method, threads=1)
        # ±inf and mask fills: no threshold (kept in float); zeros only: the documented tiny amax
        assert set(amax) == {"zeros", "x"}, method
        assert amax["zeros"] == EMPTY_AMAX and 1 < amax["x"] < 6, method
