"""Folders of .npy / .npz tensors: single and multi-input, batches or single samples, bad files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.datasets import PreprocessSpec, TensorInfo, open_dataset

X = TensorInfo("x", (1, 3, 4, 4), np.float32)
A = TensorInfo("a", (1, 2, 3), np.float32)
B = TensorInfo("b", (1, 5), np.int64)


def test_npy_single_samples_and_batches_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    one = rng.normal(size=(3, 4, 4))  # float64: cast to the input dtype
    many = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)
    last = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "a_one.npy", one)
    np.save(tmp_path / "b_many.npy", many)
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "c.NPY", last)
    ds = open_dataset(tmp_path, [X])
    assert ds.kind == "tensors" and len(ds) == 8
    batches = [b["x"] for b in ds.batches(4, workers=2)]
    assert [b.shape for b in batches] == [(4, 3, 4, 4)] * 2 and batches[0].dtype == np.float32
    expected = np.concatenate([one[None], many, last]).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    assert ds.stats.used == 8
    limited = open_dataset(tmp_path, [X], limit=3)
    assert len(limited) == 3
    np.testing.assert_array_equal(next(limited.batches(3))["x"], expected[:3])


def test_npz_multi_input_and_bad_files_skipped(tmp_path, caplog):
    rng = np.random.default_rng(1)
    a1, b1 = rng.normal(size=(4, 2, 3)), rng.integers(0, 9, size=(4, 5))
    np.savez(tmp_path / "01.npz", a=a1, b=b1, extra=np.zeros(3))  # batch of 4; extra ignored
    a2, b2 = rng.normal(size=(2, 3)), rng.integers(0, 9, size=(5,))
    np.savez_compressed(tmp_path / "02.npz", a=a2, b=b2)  # one sample
    np.savez(tmp_path / "03_missing.npz", a=a2)
    np.savez(tmp_path / "04_shape.npz", a=rng.normal(size=(3, 3)), b=b2)
    np.savez(tmp_path / "05_counts.npz", a=a1, b=b1[:3])
    np.savez(tmp_path / "06_text.npz", a=np.array(["s"] * 6).reshape(2, 3), b=b2)
    (tmp_path / "07_notzip.npz").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        ds = open_dataset(tmp_path, [A, B])
    assert len(ds) == 5
    reasons = dict((f.split("/")[-1], r) for f, r in ds.stats.skipped_files)
    assert "'b'" in reasons["03_missing.npz"] and "no array" in reasons["03_missing.npz"]
    assert "3x3" in reasons["04_shape.npz"] and "2x3" in reasons["04_shape.npz"]
    assert "different numbers" in reasons["05_counts.npz"]
    assert "dtype" in reasons["06_text.npz"]
    assert "not a valid .npz" in reasons["07_notzip.npz"]
    # the skip warnings wait for the first usable sample (none may come: then one error line)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        (batch,) = list(ds.batches(5))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 5
    np.testing.assert_allclose(batch["a"], np.concatenate([a1, a2[None]]).astype(np.float32))
    assert batch["b"].dtype == np.int64 and batch["b"].tolist() == np.concatenate([b1, b2[None]]).tolist()
    with pytest.raises(InputError, match="03_missing.npz"):
        open_dataset(tmp_path, [A, B], strict=True)


def test_truncated_npy_and_wrong_shape_npy(tmp_path):
    np.save(tmp_path / "good.npy", np.ones((3, 4, 4), np.float32))
    np.save(tmp_path / "wrong.npy", np.ones((3, 8, 8), np.float32))
    full = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(full[: len(full) - 10])
    ds = open_dataset(tmp_path, [X])
    reasons = {f.split("/")[-1]: r for f, r in ds.stats.skipped_files}
    assert set(reasons) == {"wrong.npy", "trunc.npy"}
    assert "truncated" in reasons["trunc.npy"] and "3x8x8" in reasons["wrong.npy"]
    assert len(ds) == 1 and next(ds.batches(1))["x"].sum() == 48


def test_npy_for_a_multi_input_model_is_a_usage_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"\.npy files hold one array.*\['a', 'b'\]"):
        open_dataset(tmp_path, [A, B])


def test_all_tensor_files_bad(tmp_path):
    np.save(tmp_path / "wrong.npy", np.ones((7,), np.float32))
    with pytest.raises(InputError, match="no usable tensors.*wrong.npy"):
        open_dataset(tmp_path, [X])


def test_preprocess_is_ignored_for_tensors_with_a_warning(tmp_path, caplog):
    np.save(tmp_path / "x.npy", np.ones((3, 4, 4), np.float32))
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        ds = open_dataset(tmp_path, [X], PreprocessSpec.preset("imagenet"))
    assert any("do not apply" in r.getMessage() for r in caplog.records)
    assert np.all(next(ds.batches(1))["x"] == 1)


def test_streaming_memory_does_not_grow_with_the_folder(tmp_path):
    import tracemalloc

    spec = TensorInfo("x", (4, 3, 128, 128), np.float32)  # one sample = 196 KB
    for i in range(100):  # 19.6 MB on disk in total
        np.save(tmp_path / f"{i:03d}.npy", np.full((3, 128, 128), i, np.float32))
    ds = open_dataset(tmp_path, [spec])
    tracemalloc.start()
    try:
        seen = []
        for batch in ds.batches(4, prefetch=2, workers=2):
            seen.append(float(batch["x"][0, 0, 0, 0]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == [float(4 * k) for k in range(25)]
    # the batch handed out + the one being filled + a read-ahead window of 2 batches (~17 samples
    # measured), not the 100 samples of the folder (keeping every batch peaks at ~104)
    assert peak < 24 * 196_608, peak


def test_a_file_holding_nan_is_skipped_and_a_fifo_is_never_opened(tmp_path, caplog):
    import os

    rs = np.random.RandomState(0)
    spec = TensorInfo("x", (1, 3, 4, 4), np.dtype(np.float32))
    for i in range(2):
        np.save(tmp_path / f"good{i}.npy", rs.randn(3, 4, 4).astype(np.float32))
    bad = rs.randn(3, 4, 4).astype(np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "z_nan.npy", bad)
    os.mkfifo(tmp_path / "pipe.npy")  # reading it would block forever
    with caplog.at_level(logging.WARNING):
        ds = open_dataset(tmp_path, [spec])
        batches = list(ds.batches(1))
    assert len(batches) == 2 and all(np.isfinite(b["x"]).all() for b in batches)
    text = caplog.text
    assert "pipe.npy: skipped: not a regular file" in text and "z_nan.npy" in text and "holds NaN" in text
    with pytest.raises(InputError, match="holds NaN"):
        list(open_dataset(tmp_path, [spec], strict=True).batches(1))


def test_a_folder_of_bad_files_is_one_error_line_without_a_warning_per_file(tmp_path, caplog):
    """Every file unusable: the error names the count and the first file; the per-file skip
    warnings would only repeat it (one line for bad input)."""
    for i in range(4):
        (tmp_path / f"{i:02d}.npy").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"), pytest.raises(InputError) as err:
        list(open_dataset(tmp_path, [A]).batches(1))
    assert "all 4 file(s) were skipped (first: " in str(err.value) and "00.npy" in str(err.value)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
