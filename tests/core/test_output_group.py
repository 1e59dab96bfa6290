"""A command's outputs land together or not at all (``trtq._core.atomic.output_group``), and a
model saved with external data writes both files as one (``save_onnx`` over the size limit)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from trtq._core import onnx_model
from trtq._core.atomic import atomic_path, atomic_write_text, output_group
from trtq._core.errors import CheckFailed, InputError


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_group_restores_what_it_replaced_and_removes_what_it_made(tmp_path):
    old = tmp_path / "old.json"
    old.write_text("previous")
    new = tmp_path / "sub" / "deeper" / "new.npz"
    with pytest.raises(RuntimeError, match="third step"):
        with output_group():
            atomic_write_text(old, "first write")
            atomic_write_text(old, "second write")  # written twice: the first previous is the one kept
            with atomic_path(new, suffix=".npz") as tmp:
                np.savez(tmp, a=np.arange(3))
            assert old.read_text() == "second write" and new.is_file()  # readable at once, inside the block
            raise RuntimeError("third step")
    assert old.read_text() == "previous" and not new.exists()
    assert _files(tmp_path) == ["old.json"]  # no hidden files left, nor the folders made for new.npz


def test_a_group_keeps_its_files_on_success_and_on_a_verdict(tmp_path):
    out = tmp_path / "o.txt"
    out.write_text("previous")
    with output_group():
        atomic_write_text(out, "ok")
    assert out.read_text() == "ok" and _files(tmp_path) == ["o.txt"]
    with pytest.raises(CheckFailed):
        with output_group(keep_on=(CheckFailed,)):
            atomic_write_text(out, "judged")
            raise CheckFailed("criterion not met")
    assert out.read_text() == "judged" and _files(tmp_path) == ["o.txt"]
    # a nested group joins the outer one: its files go back with the outer failure
    with pytest.raises(InputError):
        with output_group():
            with output_group():
                atomic_write_text(out, "inner")
            raise InputError("later")
    assert out.read_text() == "judged"


def _ort_outputs(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_a_model_over_the_limit_is_saved_with_its_data_beside_it_as_one(real_models, tmp_path, monkeypatch):
    model = onnx.load(str(real_models["lcnet"]))  # weights in initializers
    size = model.ByteSize()
    original = onnx.ModelProto()
    original.CopyFrom(model)
    small = tmp_path / "small.onnx"
    onnx_model.save_onnx(model, small)
    monkeypatch.setattr(onnx_model, "EXTERNAL_DATA_BYTES", size // 2)
    big = tmp_path / "big.onnx"
    onnx_model.save_onnx(model, big)
    kept = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert all(np.array_equal(kept[t.name], numpy_helper.to_array(t)) for t in original.graph.initializer)
    assert not any(t.external_data for t in model.graph.initializer)  # the caller's model keeps its tensors
    assert _files(tmp_path) == ["big.onnx", "big.onnx.data", "small.onnx"]
    assert big.stat().st_size < size // 2 < (tmp_path / "big.onnx.data").stat().st_size
    feed = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    for a, b in zip(_ort_outputs(small, feed), _ort_outputs(big, feed), strict=True):
        np.testing.assert_array_equal(a, b)
    # saved again inside a group that then fails: both files are the first save's again
    before = {n: (tmp_path / n).read_bytes() for n in ("big.onnx", "big.onnx.data")}
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    weight.raw_data = b"\0" * len(weight.raw_data)
    with pytest.raises(InputError):
        with output_group():
            onnx_model.save_onnx(model, big)
            assert (tmp_path / "big.onnx.data").read_bytes() != before["big.onnx.data"]
            raise InputError("a later output failed")
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert _files(tmp_path) == ["big.onnx", "big.onnx.data", "small.onnx"]


def test_calib_run_whose_last_output_fails_leaves_the_earlier_ones_as_they_were(
    real_models, image_dir, tmp_path, monkeypatch
):
    import trtq.reports
    from trtq.calib.cli import main as calib

    cache, hist, doc, report = (tmp_path / n for n in ("c.cache", "c.cache.hist.npz", "run.json", "run.html"))
    base = [
        "run",
        str(real_models["cls"]),
        "--data",
        str(image_dir),
        "--limit",
        "2",
        "--shape",
        "x:1x3x48x192",
        "-q",
    ]
    outputs = ["--cache", str(cache), "--json", str(doc), "--report", str(report)]
    first = CliRunner().invoke(calib, [*base, "--method", "entropy2", *outputs])
    assert first.exit_code == 0, first.output
    written = {p: p.read_bytes() for p in (cache, hist, doc, report)}

    def full_disk(path, *a, **k):
        raise InputError(f"{path}: cannot write it: No space left on device")

    monkeypatch.setattr(trtq.reports, "write_report", full_disk)
    again = CliRunner().invoke(calib, [*base, "--method", "minmax", *outputs])  # other ranges, same files
    assert again.exit_code == 2 and "run.html: cannot write it" in again.output, again.output
    assert {p: p.read_bytes() for p in written} == written  # cache, histograms and JSON rolled back
    assert json.loads(doc.read_text())["settings"]["method"] == "entropy2"
    assert _files(tmp_path) == sorted(p.name for p in written)
    # into fresh paths: nothing at all is left
    new = tmp_path / "new"
    fresh = ["--cache", str(new / "n.cache"), "--json", str(new / "n.json"), "--report", str(new / "n.html")]
    third = CliRunner().invoke(calib, [*base, *fresh])
    assert third.exit_code == 2, third.output
    assert not new.exists()  # nor the folder made for them


def test_the_library_writes_a_cache_and_its_histograms_as_one(real_models, image_dir, tmp_path, monkeypatch):
    from trtq._core.tensors import TensorInfo
    from trtq.calib.histogram import HistogramSet
    from trtq.calib.resumable import calibrate_dataset
    from trtq.datasets.folder import open_dataset
    from trtq.datasets.preprocess import PreprocessSpec

    spec = TensorInfo("x", (1, 3, 48, 192), np.dtype(np.float32))
    data = open_dataset(image_dir, [spec], PreprocessSpec.preset("paddleocr"), limit=2)
    model = onnx.load(str(real_models["cls"]))
    cache = tmp_path / "cls.cache"

    def full_disk(self, path):
        raise InputError(f"{path}: cannot write it: No space left on device")

    monkeypatch.setattr(HistogramSet, "save", full_disk)
    with pytest.raises(InputError, match="cls.cache.hist.npz: cannot write it"):
        calibrate_dataset(model, data, cache, batch_size=1, method="entropy2")
    assert _files(tmp_path) == []  # the cache, written first, was taken back
