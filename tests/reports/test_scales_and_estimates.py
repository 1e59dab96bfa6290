"""The numbers behind the pictures: log colour scale, worst-of-group binning, INT8 estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reportdata import synthetic_compare

from trtq._core.errors import InputError
from trtq.reports.colours import LEVELS, LogScale
from trtq.reports.histograms import as_histograms, load_npz, quantisation_estimate
from trtq.reports.layer_grid import build_grid
from trtq.reports.metrics import METRICS
from trtq.reports.overview import bin_starts, binned_colours


def test_log_scale_orders_errors_by_decade():
    fitted = LogScale.fit(np.concatenate([10.0 ** np.linspace(-6, 0, 101), [0.0, np.nan]]))
    assert fitted.hi == 1.0 and fitted.lo == pytest.approx(10 ** (-6 + 0.12))
    scale = LogScale(1e-6, 1.0)
    t = scale.position(np.array([0.0, 1e-6, 1e-4, 1e-2, 1.0, 10.0, np.nan]))
    assert t[0] == 0.0 and t[5] == 1.0 and np.isnan(t[6])
    np.testing.assert_allclose(t[1:5], [0.0, 1 / 3, 2 / 3, 1.0], atol=0.02)  # equal steps per decade
    levels = scale.level(np.array([1e-6, 1e-4, 1.0, np.nan]))
    assert list(levels) == [0, LEVELS // 3, LEVELS - 1, -1]
    assert LogScale.fit(np.array([0.0, np.nan])).lo > 0  # degenerate input still gives a scale
    narrow = LogScale.fit(np.array([0.5, 0.51]))
    assert narrow.hi / narrow.lo >= 100  # never exaggerate tiny differences


def test_metric_error_transforms():
    assert METRICS["cosine"].error(np.array([1.0, 0.99]))[1] == pytest.approx(0.01)
    assert METRICS["sqnr_db"].error(np.array([20.0]))[0] == pytest.approx(0.01)
    assert METRICS["rel_l2"].error(np.array([0.3]))[0] == pytest.approx(0.3)


def test_overview_binning_keeps_the_single_worst_layer():
    compare = synthetic_compare(3000, seed=0)
    spike = 2222
    for run in compare["runs"]:
        for layer in run["layers"]:
            if layer["nonfinite"]:
                layer.update(
                    nonfinite=0.0, rel_l2=1e-3, cosine=1.0, max_abs=1e-2, mean_abs=1e-3, sqnr_db=60.0
                )
        run["layers"][spike]["rel_l2"] = 1e3
    grid = build_grid([compare])
    starts = bin_starts(3000, 1000)
    assert len(starts) == 1000 and starts[0] == 0 and np.all(np.diff(starts) == 3)
    scale = LogScale.fit(grid.errors("rel_l2"))
    img = binned_colours(grid, "rel_l2", scale, starts)
    assert img.shape == (3, 1000, 4)
    darkest = img[..., :3].sum(axis=-1).argmin(axis=1)  # the darkest column of each run
    assert list(darkest) == [spike // 3] * 3


def test_layers_align_by_node_and_tensor_in_topological_order():
    a = synthetic_compare(10, seed=1)
    b = synthetic_compare(10, seed=1)
    a["runs"] = a["runs"][:1]
    b["runs"] = b["runs"][1:2]
    b["runs"][0]["layers"] = list(reversed(b["runs"][0]["layers"][3:]))  # fewer layers, other order
    grid = build_grid([a, b])
    assert [layer.index for layer in grid.layers] == list(range(10))
    assert grid.present[:3, 1].tolist() == [False] * 3 and grid.present[3:, 1].all()
    assert grid.values["rel_l2"][5, 1] == pytest.approx(
        next(r["rel_l2"] for r in b["runs"][0]["layers"] if r["index"] == 5)
    )


def test_quantisation_estimate_matches_simulated_int8():
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 1.0, 200_000)
    upper = float(np.abs(x).max())
    counts, _ = np.histogram(np.abs(x), bins=2048, range=(0, upper))
    for amax in (upper, 6.0, 2.0):
        scale = amax / 127
        q = np.clip(np.round(x / scale), -127, 127) * scale
        sqnr = 10 * math.log10(np.sum(x**2) / np.sum((q - x) ** 2))
        est, clipped = quantisation_estimate(counts, upper, amax)
        assert est == pytest.approx(sqnr, abs=0.3), amax
        assert clipped == pytest.approx(np.mean(np.abs(x) > amax), abs=2e-3)
    assert math.isnan(quantisation_estimate(np.zeros(8), 1.0, 0.5)[0])


def test_histogram_npz_loading(tmp_path):
    path = tmp_path / "h.npz"
    np.savez(
        path,
        names=np.array(["a", "b"]),
        counts=np.ones((2, 16), np.int64),
        upper=np.array([1.0, 2.0]),
        max_abs=np.array([1.0, 2.0]),
        nonfinite=np.zeros(2, np.int64),
        num_bins=16,
        format=1,
    )
    h = load_npz(path)
    assert set(h) == {"a", "b"} and h["b"][1] == 2.0 and h["a"][0].shape == (16,)
    assert as_histograms(str(path))["a"][1] == 1.0
    assert as_histograms({"c": ([1, 2], 3)})["c"][1] == 3.0
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="other.npz: not a trtq histogram file"):
        load_npz(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz: not a readable"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="missing.npz: histogram file not found"):
        load_npz(tmp_path / "missing.npz")
