"""`calib` end to end on real pretrained models and real images, and its error handling."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trtq._core.onnx_model import float_tensors, load_onnx
from trtq.calib.cache import read_cache
from trtq.calib.cli import main

DET_SHAPE = ["--shape", "x:1x3x320x320", "--preset", "paddleocr"]


def _calib(*args: str, cwd: Path | None = None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args), catch_exceptions=False)
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(main, list(args), catch_exceptions=False)


def _run_det(models, image_dir: Path, *args: str):
    """``calib run`` on PP-OCRv4 det at 320x320 with the test images, plus ``args``."""
    return _calib("run", str(models["det"]), "--data", str(image_dir), *DET_SHAPE, *args)


@pytest.fixture(scope="module")
def det_run(real_models, image_dir, tmp_path_factory):
    """``calib run`` with the default method (auto) on 4 images."""
    out = tmp_path_factory.mktemp("det")
    cache = out / "det.cache"
    res = _run_det(
        real_models, image_dir, "--limit", "4", "--cache", str(cache), "--json", str(out / "det.json"), "-q"
    )
    assert res.exit_code == 0, res.output
    return out, cache


def test_det_cache_covers_every_float_tensor_with_finite_positive_scales(det_run, real_models):
    out, cache = det_run
    c = read_cache(cache)
    assert c.trt_version == "10.16.1" and c.algorithm == "EntropyCalibration2"
    expected = [t.name for t in float_tensors(load_onnx(real_models["det"]))]
    assert list(c.scales) == expected and len(expected) > 300
    assert all(math.isfinite(s) and s > 0 for s in c.scales.values())
    doc = json.loads((out / "det.json").read_text())
    assert doc["kind"] == "calib" and doc["data"]["images_used"] == 4
    assert doc["model"]["inputs"] == [{"name": "x", "shape": [1, 3, 320, 320], "dtype": "float32"}]  # as run
    assert doc["coverage"]["total"] == len(expected)
    t = {r["name"]: r for r in doc["tensors"]}
    for r in t.values():
        assert set(r["amax_by_method"]) >= {"entropy2", "minmax", "percentile", "mse"}
        assert r["amax_by_method"]["minmax"] == pytest.approx(r["max_abs"])
        assert r["amax"] == pytest.approx(c.scales[r["name"]] * 127, rel=1e-6)
    assert (Path(str(cache) + ".hist.npz")).exists()


def _entropy2_cache(cache: Path, tmp_path: Path) -> Path:
    """The entropy2 cache of ``cache``'s saved histograms (``calib compute``'s default)."""
    out = tmp_path / "e2_of_hist.cache"
    r = _calib("compute", str(cache) + ".hist.npz", "--cache", str(out), "-q")
    assert r.exit_code == 0, r.output
    return out


def test_second_run_and_shuffled_order_are_bit_identical(det_run, real_models, image_dir, tmp_path):
    _, cache = det_run
    again = tmp_path / "again.cache"
    shuffled = tmp_path / "shuffled.cache"
    assert _run_det(real_models, image_dir, "-q", "--limit", "4", "--cache", str(again)).exit_code == 0
    assert again.read_bytes() == cache.read_bytes()
    # The same 4 images in another order: histograms are order-independent, so is a histogram
    # method's cache (auto measures on batches chosen by their index, not their content).
    files = sorted(p.name for p in image_dir.iterdir())[:4]
    sub = tmp_path / "sub"
    sub.mkdir()
    for f in files:
        shutil.copy(image_dir / f, sub / f)
    shuffled_run = _run_det(
        real_models, sub, "-q", "--shuffle", "--seed", "7", "--method", "entropy2", "--cache", str(shuffled)
    )
    assert shuffled_run.exit_code == 0
    assert shuffled.read_bytes() == _entropy2_cache(cache, tmp_path).read_bytes()


def test_shards_merge_and_resume_equal_one_run(det_run, real_models, image_dir, tmp_path):
    _, cache = det_run
    files = sorted(p.name for p in image_dir.iterdir())[:4]
    for k, part in enumerate((files[:2], files[2:])):
        d = tmp_path / f"shard{k}"
        d.mkdir()
        for f in part:
            shutil.copy(image_dir / f, d / f)
        r = _calib(
            "run",
            str(real_models["det"]),
            "--data",
            str(d),
            *DET_SHAPE,
            "-q",
            "--method",
            "entropy2",
            "--cache",
            str(tmp_path / f"s{k}.cache"),
        )
        assert r.exit_code == 0, r.output
    merged = tmp_path / "merged.cache"
    r = _calib(
        "merge",
        str(tmp_path / "s0.cache.hist.npz"),
        str(tmp_path / "s1.cache.hist.npz"),
        "-o",
        str(tmp_path / "m.npz"),
        "--cache",
        str(merged),
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert merged.read_bytes() == _entropy2_cache(cache, tmp_path).read_bytes()
    # resume (default method auto): 2 images first, then continue to 4 with --resume; auto's
    # measuring pass runs on the first images, which the resumed run skips for the histograms
    resumed = tmp_path / "resumed.cache"
    assert _run_det(real_models, image_dir, "-q", "--cache", str(resumed), "--limit", "2").exit_code == 0
    resume = _run_det(real_models, image_dir, "-q", "--cache", str(resumed), "--limit", "4", "--resume")
    assert resume.exit_code == 0
    assert resumed.read_bytes() == cache.read_bytes()


def test_compute_other_method_from_histograms_equals_running_it(det_run, real_models, image_dir, tmp_path):
    _, cache = det_run
    from_hist = tmp_path / "mm_hist.cache"
    direct = tmp_path / "mm_run.cache"
    assert (
        _calib(
            "compute", str(cache) + ".hist.npz", "--method", "minmax", "--cache", str(from_hist), "-q"
        ).exit_code
        == 0
    )
    r = _run_det(real_models, image_dir, "--limit", "4", "-q", "--method", "minmax", "--cache", str(direct))
    assert r.exit_code == 0
    assert from_hist.read_bytes() == direct.read_bytes()
    assert read_cache(direct).algorithm == "MinMaxCalibration"
    d = _calib("diff", str(cache), str(direct), "--json", "-")
    diff = json.loads(d.output)
    assert diff["common"] == len(read_cache(cache).scales) and diff["only_a"] == [] and diff["only_b"] == []
    # minmax never clips, so its amax is >= the default's (auto: a clipping candidate or max|x|) everywhere
    assert all(r["ratio"] >= 1 - 1e-6 for r in diff["tensors"])


@pytest.mark.parametrize("key", ["lcnet", "cls", "rec"])
def test_other_real_models_calibrate(real_models, image_dir, tmp_path, key):
    shape = {"lcnet": [], "cls": ["--shape", "x:1x3x48x192"], "rec": ["--shape", "x:1x3x48x320"]}[key]
    cache = tmp_path / f"{key}.cache"
    r = _calib(
        "run",
        str(real_models[key]),
        "--data",
        str(image_dir),
        "--limit",
        "3",
        *shape,
        "--cache",
        str(cache),
        "--json",
        "-",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)  # the "calib" result document (was the -o json summary)
    coverage = doc["coverage"]
    assert doc["data"]["images_used"] == 3 and coverage["calibrated"] == coverage["total"] > 50
    assert all(s > 0 and math.isfinite(s) for s in read_cache(cache).scales.values())


def test_a_percentile_flag_that_changes_nothing_is_named(real_models, image_dir, tmp_path):
    cls = str(real_models["cls"])
    args = ["--data", str(image_dir), "--limit", "2", "--shape", "x:1x3x48x192", "--percentile", "99"]
    ran = _calib("run", cls, *args, "--method", "entropy2", "--cache", str(tmp_path / "a.cache"))
    assert (
        ran.exit_code == 0 and "--percentile not used: it is a parameter of --method percentile" in ran.stderr
    )
    used = _calib("run", cls, *args, "--method", "percentile", "--cache", str(tmp_path / "b.cache"))
    assert used.exit_code == 0 and "not used" not in used.stderr
    assert read_cache(tmp_path / "a.cache").scales != read_cache(tmp_path / "b.cache").scales


def test_model_from_config_file(real_models, image_dir, tmp_path):
    (tmp_path / "trtq.toml").write_text(
        f'model = "{real_models["lcnet"]}"\nlimit = 2\n[preprocess]\nresize = "center-crop"\n'
    )
    r = subprocess.run(
        [shutil.which("calib") or "calib", "run", "--data", str(image_dir), "--cache", "calib.cache", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert len(read_cache(tmp_path / "calib.cache").scales) > 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--data", "DATA", "--cache", "OUT"], "no model given"),
        (["run", "missing.onnx", "--data", "DATA", "--cache", "OUT"], "missing.onnx: no such file"),
        (["run", "MODEL", "--data", "EMPTY", "--cache", "OUT"], "EMPTY"),
        (["run", "MODEL", "--data", "nowhere", "--cache", "OUT"], "nowhere"),
        (
            ["run", "MODEL", "--data", "DATA", "--cache", "OUT", "--method", "kl"],
            "unknown calibration method",
        ),
        (["run", "NOTONNX", "--data", "DATA", "--cache", "OUT"], "not a valid ONNX model"),
        (["show", "NOTONNX"], ":1: bad header"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(real_models, image_dir, tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    notonnx = tmp_path / "model.onnx"
    notonnx.write_text("hello")
    subst = {
        "DATA": str(image_dir),
        "EMPTY": str(empty),
        "MODEL": str(real_models["lcnet"]),
        "NOTONNX": str(notonnx),
        "OUT": str(tmp_path / "out.cache"),
    }
    argv = [subst.get(a, a) for a in args]
    r = subprocess.run(
        [shutil.which("calib") or "calib", *argv], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert (
        len(lines) == 1 and message.replace("EMPTY", str(empty)).replace("nowhere", "nowhere") in lines[0]
    ), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.cache").exists()


@pytest.mark.parametrize("cmd", [[], ["run"], ["show"], ["diff"], ["merge"], ["compute"], ["list"]])
def test_help_has_examples(cmd):
    r = CliRunner().invoke(main, [*cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output
    if cmd and cmd[0] in ("run", "show", "diff", "merge", "compute"):
        assert "Example" in r.output


def test_list_shows_methods(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "trtq.calib.cli", "list", "--json", "-"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    names = {m["name"] for m in json.loads(r.stdout)["methods"]}
    assert names >= {"entropy2", "minmax", "percentile", "mse"}


def test_json_to_stdout_is_the_same_as_json_to_a_file(det_run, tmp_path):
    _, cache = det_run
    flag = _calib("show", str(cache), "--json", "-")
    option = _calib("show", str(cache), "--json", str(tmp_path / "show.json"))
    assert flag.exit_code == option.exit_code == 0
    assert json.loads(flag.output) == json.loads((tmp_path / "show.json").read_text())
    assert len(json.loads(flag.output)["tensors"]) > 300
