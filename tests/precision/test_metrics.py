"""Metrics against hand-computed values; NaN/Inf are the worst score and never averaged away."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.precision.metrics import METRIC_KEYS, METRICS, MetricAccumulator, get_metric, tensor_metrics


def test_metrics_match_hand_computed_values():
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    r = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    m = tensor_metrics(a, r)
    # d = a - r = [0, 0, 0, -1]; |r|^2 = 39; |a|^2 = 30; <a, r> = 34
    assert m["max_abs"] == pytest.approx(1.0)
    assert m["mean_abs"] == pytest.approx(0.25)
    assert m["rel_l2"] == pytest.approx(1 / math.sqrt(39))
    assert m["cosine"] == pytest.approx(34 / math.sqrt(30 * 39))
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(39))
    assert m["nonfinite"] == 0.0


def test_identical_and_zero_tensors():
    x = np.linspace(-3, 3, 11, dtype=np.float32)
    m = tensor_metrics(x, x)
    assert (m["max_abs"], m["rel_l2"], m["cosine"], m["sqnr_db"]) == (0.0, 0.0, 1.0, math.inf)
    z = np.zeros(4, np.float32)
    assert tensor_metrics(z, z)["cosine"] == 1.0
    m = tensor_metrics(np.ones(4, np.float32), z)
    assert m["rel_l2"] == math.inf and m["cosine"] == 0.0 and m["sqnr_db"] == -math.inf


def test_nan_and_inf_are_the_worst_score():
    r = np.ones(4, np.float32)
    m = tensor_metrics(np.array([1, 1, np.nan, np.inf], np.float32), r)
    assert m["nonfinite"] == pytest.approx(0.5)
    assert m["max_abs"] == math.inf and math.isnan(m["cosine"]) and math.isnan(m["sqnr_db"])
    tiny = tensor_metrics(r * 1.5, r)  # a large but finite error
    for metric in (m for m in METRICS.values() if m.key in METRIC_KEYS):  # the tensor metrics
        assert metric.badness(m) > metric.badness(tiny)
        if metric.name != "nonfinite":
            assert metric.badness(m) == math.inf
            assert not metric.passes(m, 1e9 if not metric.higher_is_better else -1e9)


def test_matching_infinities_are_not_errors():
    a = np.array([np.inf, 1.0, -np.inf], np.float32)
    m = tensor_metrics(a, a.copy())
    assert m["nonfinite"] == 0.0 and m["max_abs"] == 0.0


def test_one_nonfinite_in_many_batches_is_not_averaged_away(rng):
    acc = MetricAccumulator()
    for i in range(50):
        r = rng.randn(1000).astype(np.float32)
        a = r.copy()
        if i == 17:
            a[3] = np.nan
        acc.update(a, r)
    m = acc.result()
    assert m["nonfinite"] == pytest.approx(1 / 50000)
    assert get_metric("cosine").badness(m) == math.inf


def test_accumulation_equals_one_shot(rng):
    r = rng.randn(3, 500)
    a = r + rng.randn(3, 500) * 0.01
    acc = MetricAccumulator()
    for i in range(3):
        acc.update(a[i], r[i])
    whole = tensor_metrics(a, r)
    for k, v in acc.result().items():
        assert v == pytest.approx(whole[k], rel=1e-12)


def test_metric_registry_directions_and_errors():
    assert get_metric("cosine").higher_is_better and get_metric("sqnr").higher_is_better
    assert not get_metric("rel-l2").higher_is_better and not get_metric("max-abs").higher_is_better
    assert get_metric("rel_l2") is get_metric("rel-l2")
    m = tensor_metrics(np.array([1.0, 2.0]), np.array([1.0, 2.2]))
    assert get_metric("cosine").passes(m, 0.99) and not get_metric("rel-l2").passes(m, 0.01)
    with pytest.raises(InputError, match="unknown metric 'psnr'"):
        get_metric("psnr")
    with pytest.raises(InputError, match="shape mismatch"):
        tensor_metrics(np.zeros(3), np.zeros(4))


def test_compiled_and_numpy_paths_agree(rng):
    r = rng.randn(2000).astype(np.float16)  # float16 takes the numpy path, float32 the compiled one
    a = (r + rng.randn(2000).astype(np.float16) * np.float16(0.05)).astype(np.float16)
    a[5] = np.inf
    slow = tensor_metrics(a, r)
    fast = tensor_metrics(a.astype(np.float32), r.astype(np.float32))
    assert slow["nonfinite"] == fast["nonfinite"] == pytest.approx(1 / 2000)
    a[5] = 0
    slow, fast = tensor_metrics(a, r), tensor_metrics(a.astype(np.float32), r.astype(np.float32))
    for k in slow:
        assert slow[k] == pytest.approx(fast[k], rel=1e-9)


def test_bound_is_never_beaten_by_any_rest_of_the_data():
    """MetricAccumulator.bound: the most favourable final metrics given the reference energy
    still to come. No completion may beat it, and the best completion (the rest of the actual
    equal to a multiple of the rest of the reference) reaches the cosine bound."""

    rng = np.random.default_rng(5)
    for _ in range(300):
        n1, n2 = (int(v) for v in rng.integers(1, 40, 2))
        r1, r2 = rng.standard_normal(n1), rng.standard_normal(n2) * rng.uniform(0, 3)
        a1 = r1 + rng.standard_normal(n1) * rng.uniform(0, 2)
        b = MetricAccumulator().update(a1, r1).bound(float(r2 @ r2), n2)
        for a2 in (r2 * rng.uniform(0, 5), rng.standard_normal(n2), -r2, np.zeros(n2)):
            full = MetricAccumulator().update(np.concatenate([a1, a2]), np.concatenate([r1, r2])).result()
            assert full["cosine"] <= b["cosine"] + 1e-12
            assert full["rel_l2"] >= b["rel_l2"] - 1e-12 and full["sqnr_db"] <= b["sqnr_db"] + 1e-9
            assert full["max_abs"] >= b["max_abs"] and full["mean_abs"] >= b["mean_abs"] - 1e-12
    r1 = rng.standard_normal(20)
    a1, r2 = r1 + rng.standard_normal(20) * 0.3, rng.standard_normal(30)
    b = MetricAccumulator().update(a1, r1).bound(float(r2 @ r2), 30)
    best = max(
        MetricAccumulator()
        .update(np.concatenate([a1, lam * r2]), np.concatenate([r1, r2]))
        .result()["cosine"]
        for lam in np.linspace(0, 5, 2001)
    )
    assert best == pytest.approx(b["cosine"], abs=1e-6)
    bad = MetricAccumulator().update(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    assert bad.bound(10.0, 5)["rel_l2"] == float("inf")  # a NaN seen can never be undone
