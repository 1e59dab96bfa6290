"""The default calibration method: ``auto`` (mse fallback) where the model and the data are at
hand, entropy2 where only histograms are (``calib compute/merge``) and TensorRT's own calibrator's
entropy2 with ``--backend tensorrt``. End to end on PP-OCR cls and real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from trtq.calib.auto import AutoSettings, candidates
from trtq.calib.cache import read_cache
from trtq.calib.cli import main
from trtq.calib.histogram import HistogramSet
from trtq.calib.methods import get_method
from trtq.calib.run import compute_amax
from trtq.calib.tensorrt.registry import calibrator_for_algorithm

pytestmark = pytest.mark.slow

CLS = ["--shape", "x:1x3x48x192", "--preset", "paddleocr-rec", "--limit", "6"]


def _calib(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def default_run(real_models, image_dir, tmp_path_factory):
    """``calib run`` with no --method (and no config file in the working folder)."""
    out = tmp_path_factory.mktemp("default")
    cache = out / "cls.cache"
    r = _calib(
        "run",
        real_models["cls"],
        "--data",
        image_dir,
        *CLS,
        "--cache",
        cache,
        "--json",
        out / "run.json",
        "-q",
    )
    assert r.exit_code == 0, r.output
    return cache, json.loads((out / "run.json").read_text())


def test_defaults_agree():
    """The CLI default, the library's and auto's fallback, as documented."""
    from trtq.calib.cli_options import DEFAULT_METHOD, HISTOGRAM_DEFAULT_METHOD

    assert DEFAULT_METHOD == "auto" and HISTOGRAM_DEFAULT_METHOD == "entropy2"
    assert AutoSettings().fallback == "mse"
    assert get_method("auto").params["auto_fallback"] == AutoSettings().fallback
    assert get_method("auto").params["auto_samples"] == AutoSettings().samples


def test_calib_run_defaults_to_auto_with_the_mse_fallback(default_run):
    cache, doc = default_run
    assert doc["settings"]["method"] == "auto"
    hs = HistogramSet.load(str(cache) + ".hist.npz")
    mse = compute_amax(hs, "mse")  # independent of auto's own fallback computation
    amax = read_cache(cache).amax()
    rows = {r["name"]: r for r in doc["tensors"]}
    fallback = {n: r for n, r in rows.items() if r["auto_choice"]["candidate"] == "fallback"}
    measured = {n: r for n, r in rows.items() if r["auto_choice"]["candidate"] != "fallback"}
    assert len(fallback) > 50 and len(measured) > 20  # cls: 235 tensors, 54 with quantized consumers
    for n, r in fallback.items():
        assert r["auto_choice"]["method"] == "mse"
        assert amax[n] == pytest.approx(mse[n], rel=1e-6)
    for n in measured:  # the winner is one of the tensor's histogram candidates
        values = [v for _, v in candidates(hs[n])]
        assert min(abs(amax[n] - v) / v for v in values) < 1e-6, n
    # not the fallback under another name: the measured choices move some thresholds off mse's
    moved = [n for n in measured if abs(amax[n] - mse[n]) > 1e-6 * mse[n]]
    assert moved and {r["auto_choice"]["method"] for r in measured.values()} - {"mse"}


def test_the_default_cache_header_is_the_one_the_entropy2_calibrator_reads(default_run):
    """TensorRT 10 reads a cache only through a calibrator of the header's algorithm; ours is
    entropy2 (the calibrator trtq's TensorRT 10 build uses for a cache, and trtexec's)."""
    cache, _ = default_run
    c = read_cache(cache)
    assert cache.read_text().splitlines()[0] == "TRT-101601-EntropyCalibration2"
    assert c.algorithm == "EntropyCalibration2" and calibrator_for_algorithm(c.algorithm).name == "entropy2"


def test_histogram_commands_keep_entropy2_and_refuse_auto_before_writing(default_run, tmp_path):
    cache, _ = default_run
    hist = str(cache) + ".hist.npz"
    out = tmp_path / "e2.cache"
    r = _calib("compute", hist, "--cache", out, "-q")
    assert r.exit_code == 0, r.output
    expected = compute_amax(HistogramSet.load(hist), "entropy2")
    got = read_cache(out).amax()
    assert got.keys() == expected.keys()
    assert all(got[n] == pytest.approx(v, rel=1e-6) for n, v in expected.items())
    for args in (
        ["compute", hist, "--method", "auto", "--cache", tmp_path / "a.cache"],
        ["merge", hist, hist, "-o", tmp_path / "m.npz", "--cache", tmp_path / "m.cache", "--method", "auto"],
    ):
        r = _calib(*args)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert r.exit_code == 2 and len(errors) == 1 and "needs the model and the data" in errors[0], r.output
        assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2.cache"]  # nothing else written


def test_config_auto_fallback_reaches_the_run(real_models, image_dir, tmp_path, monkeypatch):
    """auto's parameters come from [tool.trtq]: auto_fallback = "entropy2" gives entropy2 (not the
    default mse) to the unmeasured tensors."""
    (tmp_path / "trtq.toml").write_text('auto_fallback = "entropy2"\n')
    monkeypatch.chdir(tmp_path)
    r = _calib(
        "run", real_models["cls"], "--data", image_dir, *CLS, "--cache", "c.cache", "--json", "r.json", "-q"
    )
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    e2 = compute_amax(HistogramSet.load(tmp_path / "c.cache.hist.npz"), "entropy2")
    fallback = [r for r in doc["tensors"] if r["auto_choice"]["candidate"] == "fallback"]
    assert fallback and {r["auto_choice"]["method"] for r in fallback} == {"entropy2"}
    assert all(r["amax"] == pytest.approx(e2[r["name"]], rel=1e-6) for r in fallback)


def test_tensorrt_backend_keeps_tensorrts_entropy2_calibrator(real_models, image_dir, tmp_path, monkeypatch):
    """No --method/--calibrator with --backend tensorrt: TensorRT's own entropy2 calibrator, not auto."""
    import trtq.calib.tensorrt as trt_calib

    seen = {}

    def fake(model, batches, cache_path, *, calibrator, batch_size, trt_version_hint, progress):
        seen["calibrator"] = calibrator
        return {"backend": "tensorrt 10.16.1", "calibrator": calibrator, "algorithm": "EntropyCalibration2"}

    monkeypatch.setattr(trt_calib, "calibrate_with_tensorrt", fake)
    r = _calib("run", real_models["cls"], "--data", image_dir, *CLS, "--cache", tmp_path / "c.cache",
               "--backend", "tensorrt", "--json", "-")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert seen == {"calibrator": "entropy2"}
    assert json.loads(r.output)["calibrator"] == "entropy2"


def test_python_api_defaults(real_models, image_dir):
    """calibrate() and calibrate_dataset() have the data: auto by default; compute_amax and
    result_from_histograms have histograms alone: entropy2."""
    import inspect

    from trtq._core.onnx_model import load_onnx
    from trtq._core.tensors import TensorInfo
    from trtq.calib.resumable import calibrate_dataset
    from trtq.calib.run import calibrate, result_from_histograms
    from trtq.datasets.folder import open_dataset
    from trtq.datasets.preprocess import PreprocessSpec

    spec = TensorInfo("x", (1, 3, 48, 192), np.dtype(np.float32))
    data = open_dataset(image_dir, [spec], PreprocessSpec.preset("paddleocr-rec"), limit=2)
    result = calibrate(load_onnx(real_models["cls"]), data.batches(1))
    assert result.method == "auto" and result.choices
    fallback = {n for n, c in result.choices.items() if c["candidate"] == "fallback"}
    mse = compute_amax(result.histograms, "mse")  # auto's fallback; the histogram default is entropy2
    assert all(result.amax[n] == mse[n] for n in fallback if n in result.amax)
    assert inspect.signature(calibrate_dataset).parameters["method"].default == "auto"
    assert result_from_histograms(result.histograms).amax == compute_amax(result.histograms, "entropy2")


def test_a_config_method_auto_is_refused_by_compute_with_a_way_out(tmp_path, monkeypatch):
    """[tool.trtq] method = "auto" serves calib run; calib compute names the config key and the flag."""
    hs = HistogramSet(["x"])
    hs.collect({"x": np.random.default_rng(3).standard_normal(10_000)}, samples=1)
    hs.save(tmp_path / "h.npz")
    (tmp_path / "trtq.toml").write_text('method = "auto"\n')
    monkeypatch.chdir(tmp_path)
    r = _calib("compute", "h.npz", "--cache", "c.cache")
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1, r.output
    assert "error: trtq.toml: method = 'auto'" in errors[0] and "--method entropy2" in errors[0]
    assert not (tmp_path / "c.cache").exists()
    r = _calib("compute", "h.npz", "--cache", "c.cache", "--method", "entropy2", "-q")
    assert r.exit_code == 0, r.output
    assert read_cache(tmp_path / "c.cache").amax()["x"] == pytest.approx(compute_amax(hs, "entropy2")["x"])
