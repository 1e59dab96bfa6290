"""`calib` on a tiny synthetic model: an attention-style mask Add fed from a folder of .npz samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from trtq.calib.cache import read_cache
from trtq.calib.cli import main
from trtq.calib.histogram import HistogramSet

METHODS = ["entropy2", "minmax", "mse", "percentile"]


def _calib(*args: str):
    return CliRunner().invoke(main, list(args))


def _masked_softmax(tmp_path_factory, fill: float) -> tuple[Path, Path]:
    """``probs = Softmax(x + mask)`` with ``mask`` of 0 and ``fill`` (a padding mask), 4 .npz samples."""
    root = tmp_path_factory.mktemp("mask")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "mask"], ["scores"], name="add_mask"),
            helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        ],
        "masked_softmax",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 8]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = root / "mask.onnx"
    onnx.save(model, path)
    data = root / "samples"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.where(np.arange(8) >= 5 + i % 2, fill, 0.0).astype(np.float32)[None]
        np.savez(data / f"s{i}.npz", x=rng.standard_normal((1, 8)).astype(np.float32), mask=mask)
    return path, data


@pytest.fixture(scope="module")
def mask_model(tmp_path_factory) -> tuple[Path, Path]:
    """A padding mask of 0 and -inf."""
    return _masked_softmax(tmp_path_factory, -np.inf)


@pytest.fixture(scope="module")
def lowest_mask_model(tmp_path_factory) -> tuple[Path, Path]:
    """A padding mask of 0 and float32's lowest value (Hugging Face's ``finfo.min`` masks)."""
    return _masked_softmax(tmp_path_factory, float(np.finfo(np.float32).min))


def test_run_counts_lowest_mask_fills_and_keeps_the_masked_tensors_in_float(lowest_mask_model, tmp_path):
    model, data = lowest_mask_model
    cache, doc_path = tmp_path / "c.cache", tmp_path / "c.json"
    r = _calib("run", str(model), "--data", str(data), "--cache", str(cache), "--json", str(doc_path))
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # the console wraps lines
    assert "mask fills" in said and "not binned" in said and "no scale in the cache" in said
    doc = json.loads(doc_path.read_text())
    rows = {t["name"]: t for t in doc["tensors"]}
    # 3 + 2 + 3 + 2 masked positions over the 4 samples, in the mask input and in the scores
    assert rows["mask"]["mask_fill"] == rows["scores"]["mask_fill"] == 10
    assert rows["x"]["mask_fill"] == rows["probs"]["mask_fill"] == 0
    # INT8 would clamp the fill to -amax: the two masked tensors get no scale and stay in float
    assert list(read_cache(cache).amax()) == ["x", "probs"]
    assert rows["mask"]["amax"] is None and rows["scores"]["scale"] is None
    assert set(rows["scores"]["amax_by_method"].values()) == {None}
    assert doc["coverage"] == {"calibrated": 2, "total": 4}


@pytest.mark.parametrize("method", METHODS)
def test_run_on_a_mask_tensor_of_zeros_and_minus_inf(mask_model, tmp_path, method):
    model, data = mask_model
    cache = tmp_path / "c.cache"
    r = _calib(
        "run", str(model), "--data", str(data), "--cache", str(cache), "--method", method,
        "--json", str(tmp_path / "c.json"), "-q",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    amax = read_cache(cache).amax()
    assert list(amax) == ["x", "probs"]  # the -inf mask and the masked scores stay in float
    assert 0.5 < amax["x"] < 5 and 0 < amax["probs"] <= 1.001
    doc = json.loads((tmp_path / "c.json").read_text())
    rows = {t["name"]: t for t in doc["tensors"]}
    assert rows["mask"]["nonfinite"] == rows["scores"]["nonfinite"] == 10
    assert set(rows["mask"]["amax_by_method"]) >= set(METHODS)
    assert set(rows["mask"]["amax_by_method"].values()) == {None}


@pytest.mark.parametrize("method", METHODS)
def test_compute_on_saved_histograms_with_a_mask_tensor(tmp_path, method):
    hs = HistogramSet(["mask", "x"])
    mask = np.array([[0, 0, 0, -np.inf, -np.inf]] * 10, np.float32)
    hs.collect({"mask": mask, "x": np.random.default_rng(1).standard_normal(10_000)}, samples=10)
    hs.save(tmp_path / "h.npz")
    cache = tmp_path / f"{method}.cache"
    r = _calib("compute", str(tmp_path / "h.npz"), "--method", method, "--cache", str(cache), "-q")
    assert r.exit_code == 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    amax = read_cache(cache).amax()
    assert "mask" not in amax and 1 < amax["x"] < 6


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--report", "OUT/r.html"], "--report"),
        (["--method", "mse"], "--method"),
        (["--resume"], "--resume"),
        (
            ["--method", "percentile", "--percentile", "99.9", "--report", "OUT/r.html"],
            "--method, --percentile, --report",
        ),
    ],
)
def test_tensorrt_backend_rejects_cpu_only_flags_in_one_line(mask_model, tmp_path, flags, named):
    """TensorRT's calibrator keeps no histograms: these flags would be silently ignored. (--json is
    honoured: it writes the calib document of TensorRT's run.)"""
    model, data = mask_model
    argv = [f.replace("OUT", str(tmp_path)) for f in flags]
    r = _calib(
        "run",
        str(model),
        "--data",
        str(data),
        "--cache",
        str(tmp_path / "c.cache"),
        "--backend",
        "tensorrt",
        *argv,
    )
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"error: {named} cannot be used with --backend tensorrt" in errors[0], (
        r.output
    )
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_tensorrt_backend_without_cpu_only_flags_reaches_tensorrt(mask_model, tmp_path):
    model, data = mask_model
    r = _calib(
        "run", str(model), "--data", str(data), "--cache", str(tmp_path / "c.cache"),
        "--backend", "tensorrt", "--calibrator", "minmax", "--trt-version", "10.16.1",
    )  # fmt: skip
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    if r.exit_code == 0:  # pragma: no cover - a machine with TensorRT 10 and a GPU
        assert read_cache(tmp_path / "c.cache").scales
    else:  # no TensorRT (or no GPU) here: the one-line dependency error, not a flag error
        assert r.exit_code == 2 and len(errors) == 1 and "cannot be used" not in errors[0], r.output


BLOCK_IMAGE_STACK = """
import sys
IMAGE_STACK = ("cv2", "matplotlib", "PIL", "skimage")
for name in IMAGE_STACK:
    sys.modules[name] = None  # any import of them now raises ImportError
from trtq.calib.cli import main
sys.argv = ["calib", *sys.argv[1:]]
try:
    main()
finally:
    loaded = [n for n in IMAGE_STACK if sys.modules.get(n) is not None]
    assert not loaded, loaded
"""


@pytest.mark.parametrize(
    "args",
    [
        ["show", "A"],
        ["show", "A", "--json", "-"],
        ["diff", "A", "B"],
        ["diff", "A", "B", "--json", "-"],
        ["compute", "H", "--method", "mse", "--cache", "OUT"],
        ["merge", "H", "H", "-o", "OUT.npz"],
        ["list"],
        ["run", "--help"],
    ],
)
def test_commands_that_read_caches_import_no_image_stack(tmp_path, args):
    """OpenCV (and matplotlib, Pillow) stay unloaded: the command works with them blocked."""
    import os
    import subprocess
    import sys

    from trtq.calib.cache import CalibrationCache, write_cache

    write_cache(tmp_path / "a.cache", CalibrationCache.from_amax({"x": 1.0, "y": 2.0}))
    write_cache(tmp_path / "b.cache", CalibrationCache.from_amax({"x": 1.5, "z": 2.0}))
    hs = HistogramSet(["x"])
    hs.collect({"x": np.random.default_rng(2).standard_normal(1000)}, samples=1)
    hs.save(tmp_path / "h.npz")
    subst = {"A": "a.cache", "B": "b.cache", "H": "h.npz", "OUT": "out.cache", "OUT.npz": "out.npz"}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_IMAGE_STACK, *[subst.get(a, a) for a in args]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def test_run_on_a_tensor_folder_reports_samples_not_images(mask_model, tmp_path):
    model, data = mask_model
    r = _calib("run", str(model), "--data", str(data), "--cache", str(tmp_path / "c.cache"))
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich may wrap the summary line
    assert "samples used 4, skipped 0" in text and "samples/s" in text, r.output
    assert "images used" not in text and "images/s" not in text, r.output
