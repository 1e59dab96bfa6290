"""FP8's default ranges are each tensor's largest |x| (E4M3 needs no clipping; measured in
BENCHMARKS.md "FP8 ranges"): from the histograms beside a cache, or calibrated with minmax; a
method chosen with --method is kept."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from precision_tiny_models import WIDE, two_conv_workspace

from trtq.calib.cache import read_cache
from trtq.calib.cli import main as calib_main
from trtq.calib.histogram import HistogramSet
from trtq.precision.cli import main as precision_main
from trtq.precision.cli_common import FP8_RANGES, cache_ranges


def _invoke(main, *args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def calibrated(tmp_path):
    tmp, model, data, _ = two_conv_workspace(tmp_path, **WIDE)
    rng = np.random.default_rng(1)
    for i in range(12):  # a long tail: a few rare outliers, as real activations have
        x = rng.standard_normal((1, WIDE["cin"], 6, 6)).astype(np.float32)
        x[0, 0, 0, 0] = 40.0 if i % 6 == 0 else x[0, 0, 0, 0]
        np.save(data / f"t{i}.npy", x)
    cache = tmp / "e2.cache"
    r = _invoke(calib_main, "run", model, "--data", data, "--cache", cache, "--method", "entropy2", "-q")
    assert r.exit_code == 0, r.output
    return tmp, model, data, cache


def _scales(path) -> dict[str, float]:
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            out[n.input[0]] = float(inits[n.input[1]]) * 112.0  # amax maps to 448 / 4
    return out


def test_export_fp8_takes_the_largest_abs_from_the_histograms_beside_the_cache(calibrated):
    tmp, model, _, cache = calibrated
    hist = HistogramSet.load(str(cache) + ".hist.npz")
    entropy2 = read_cache(cache).amax()
    out = tmp / "m.fp8.onnx"
    assert _invoke(precision_main, "export", model, "--fp8", "--cache", cache, "-o", out).exit_code == 0
    for tensor, amax in _scales(out).items():
        assert amax == pytest.approx(hist.max_abs(tensor), rel=1e-6)
    assert any(hist.max_abs(t) > entropy2[t] * 1.01 for t in _scales(out))  # entropy2 clipped some
    assert cache_ranges(str(cache), "int8") == entropy2  # INT8 keeps the cache's own thresholds
    # without the histograms: the cache's thresholds, with a warning
    (tmp / "e2.cache.hist.npz").unlink()
    assert cache_ranges(str(cache), "fp8") == entropy2


def test_compare_fp8_calibrates_with_minmax_unless_a_method_is_chosen(calibrated):
    tmp, model, data, _ = calibrated
    assert FP8_RANGES == "minmax"
    doc = {}
    for name, extra in (("default", ()), ("entropy2", ("--method", "entropy2"))):
        r = _invoke(
            precision_main,
            "compare",
            model,
            "--data",
            data,
            "--precision",
            "fp8",
            "--json",
            "-",
            "-q",
            *extra,
        )
        assert r.exit_code == 0, r.output
        doc[name] = json.loads(r.stdout)
    amax = {k: v["runs"][0]["layers"] for k, v in doc.items()}
    assert amax["default"] != amax["entropy2"]  # different ranges, different errors
    assert np.isfinite([la["rel_l2"] for la in amax["default"]]).all()
