"""Histogram collection: exact counts, power-of-two range growth, order independence, merging."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.calib.histogram import HistogramSet


def _numpy_reference(values: np.ndarray, upper: float, bins: int) -> np.ndarray:
    a = np.abs(values[np.isfinite(values)]).astype(np.float64)
    idx = np.floor(a * (bins / upper)).astype(np.int64)
    return np.bincount(idx, minlength=bins)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_counts_equal_numpy_binning_with_power_of_two_range(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(100_003) * 3).astype(dtype)
    hs = HistogramSet(["t"], 2048)
    hs.collect({"t": x})
    h = hs["t"]
    amax = float(np.abs(x.astype(np.float32)).max())
    assert h.upper == 2.0 ** np.ceil(np.log2(amax)) or h.upper == 2 * 2.0 ** np.floor(np.log2(amax))
    assert h.upper > amax >= h.upper / 2
    binned = x.astype(np.float32)  # binned as float32: float16 widens exactly, float64 rounds
    np.testing.assert_array_equal(h.counts, _numpy_reference(binned, h.upper, 2048))
    assert h.max_abs == pytest.approx(amax) and h.total == x.size


@pytest.mark.parametrize(
    "case", ["growth-mid-chunk", "nan-and-inf", "tiny-values", "bins-not-power-of-two", "zero-runs"]
)
def test_kernel_fast_and_fallback_paths_agree_with_numpy(case):
    """The kernel bins whole L1-sized chunks without per-value tests and falls back to one value
    at a time where a chunk leaves the range, holds NaN/Inf, or the bins are not a power of
    two; every path must give numpy's counts."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(50_001).astype(np.float32)
    bins = 2048
    if case == "growth-mid-chunk":  # sorted: the range grows inside chunks, again and again
        x = np.sort(np.abs(x) * 10.0 ** np.linspace(-3, 3, x.size)).astype(np.float32)
    elif case == "nan-and-inf":
        x[rng.integers(0, x.size, 40)] = np.nan
        x[rng.integers(0, x.size, 7)] = -np.inf
    elif case == "tiny-values":  # bins / upper is far beyond float32's range: float64 path
        x = (x * np.float32(1e-38)).astype(np.float32)
    elif case == "bins-not-power-of-two":
        bins = 1000
    else:
        x[5000:20000] = 0.0
    hs = HistogramSet(["t"], bins)
    for part in np.array_split(x, 3):
        hs.collect({"t": part})
    h = hs["t"]
    finite = x[np.isfinite(x)]
    np.testing.assert_array_equal(h.counts, _numpy_reference(finite, h.upper, bins))
    assert h.max_abs == float(np.abs(finite).max())
    assert h.nonfinite == x.size - finite.size


def test_batch_order_and_batching_do_not_change_the_histogram():
    rng = np.random.default_rng(2)
    batches = [rng.laplace(size=5000).astype(np.float32) * s for s in (0.01, 1, 100, 3, 1e4, 0.5)]
    results = []
    for order in (range(6), reversed(range(6)), rng.permutation(6)):
        hs = HistogramSet(["t"])
        for i in order:
            hs.collect({"t": batches[i]})
        results.append(hs)
    whole = HistogramSet(["t"])
    whole.collect({"t": np.concatenate(batches)})
    for hs in results:
        np.testing.assert_array_equal(hs.counts, whole.counts)
        assert hs.upper[0] == whole.upper[0]
    # range growth loses no counts
    assert whole["t"].total == sum(b.size for b in batches)


def test_merge_of_shards_equals_single_pass(tmp_path):
    rng = np.random.default_rng(3)
    data = {f"t{i}": rng.standard_normal(20000).astype(np.float32) * 10**i for i in range(4)}
    full = HistogramSet(list(data))
    full.collect(data, samples=2)
    shards = []
    for part in range(2):
        hs = HistogramSet(list(data))
        hs.collect({k: v[part::2] for k, v in data.items()}, samples=1)
        path = tmp_path / f"shard{part}.npz"
        hs.save(path)
        shards.append(HistogramSet.load(path))
    merged = HistogramSet.merged(shards)
    np.testing.assert_array_equal(merged.counts, full.counts)
    np.testing.assert_array_equal(merged.upper, full.upper)
    assert merged.samples == 2
    assert [merged.max_abs(n) for n in data] == [full.max_abs(n) for n in data]


def test_nonfinite_values_are_counted_not_binned_and_zeros_handled():
    hs = HistogramSet(["relu", "dead"])
    hs.collect(
        {
            "relu": np.array([0, 0, 0, 1.5, np.nan, np.inf, -np.inf], np.float32),
            "dead": np.zeros(100, np.float32),
        }
    )
    r, d = hs["relu"], hs["dead"]
    assert r.nonfinite == 3 and r.total == 4 and r.counts[0] == 3 and r.upper == 2.0
    assert d.total == 100 and d.counts[0] == 100 and d.upper == 0.0
    assert hs.seen() == ["relu", "dead"]


def test_save_load_round_trip_and_bad_file(tmp_path):
    hs = HistogramSet(["a", "b"], 64)
    hs.collect({"a": np.arange(10, dtype=np.float32)}, samples=5)
    hs.sources = ["img0.png"]
    p = tmp_path / "h.npz"
    hs.save(p)
    back = HistogramSet.load(p)
    assert (
        back.names == ["a", "b"]
        and back.num_bins == 64
        and back.samples == 5
        and back.sources == ["img0.png"]
    )
    np.testing.assert_array_equal(back.counts, hs.counts)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        HistogramSet.load(bad)
    with pytest.raises(InputError, match="even"):
        HistogramSet(["x"], 7)
    with pytest.raises(InputError, match="bins"):
        HistogramSet(["x"], 64).merge(HistogramSet(["x"], 128))


def test_mask_fills_are_counted_not_binned_merged_and_saved(tmp_path):
    """An attention mask of 0 and float32's lowest value added to scores (Hugging Face's
    finfo.min masks): the scores are binned as if the fills were absent; the fills are counted."""
    rng = np.random.default_rng(3)
    scores = rng.standard_normal(4096).astype(np.float32) * 3
    lowest = np.finfo(np.float32).min
    masked = scores.copy()
    masked[::4] = lowest + scores[::4]  # still float32's lowest after the add
    hs = HistogramSet(["scores"], 2048)
    hs.collect({"scores": masked[:2048]})  # the fast path sees the range first, then the fills
    hs.collect({"scores": masked[2048:]})
    plain = HistogramSet(["scores"], 2048)
    kept = masked[np.abs(masked) < 2.0**126]
    plain.collect({"scores": kept})
    h = hs["scores"]
    assert h.mask_fill == 1024 and h.nonfinite == 0
    np.testing.assert_array_equal(h.counts, plain["scores"].counts)
    assert h.upper == plain["scores"].upper <= 16 and h.max_abs == pytest.approx(np.abs(kept).max())
    np.testing.assert_array_equal(h.counts, _numpy_reference(kept, h.upper, 2048))

    other = HistogramSet(["scores"], 2048)
    other.collect({"scores": np.array([lowest, -lowest, 1.0], np.float32)})
    hs.merge(other)
    assert hs.mask_fill("scores") == 1026
    hs.save(tmp_path / "h.npz")
    assert HistogramSet.load(tmp_path / "h.npz").mask_fill("scores") == 1026
