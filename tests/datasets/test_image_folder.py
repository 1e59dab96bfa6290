"""Image folders end to end: batching, order, shuffle/limit, errors, and bounded read-ahead."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from ds_helpers import image_input, write_image

import trtq.datasets.image_folder as image_folder_module
from trtq._core.errors import InputError
from trtq.datasets import PreprocessSpec, TensorInfo, open_dataset

IMAGENET = PreprocessSpec.preset("imagenet")


def collect(ds, bs, **kw):
    return [b["x"] for b in ds.batches(bs, **kw)]


def test_real_images_batches_exact_and_identical_across_workers(image_dir, caplog):
    spec = image_input(64, 64, batch=5)
    n = len(list(image_dir.iterdir()))
    assert n >= 10
    ds = open_dataset(image_dir, [spec], IMAGENET)
    assert len(ds) == n and ds.kind == "images"
    assert [p.name for p in ds.files] == sorted(p.name for p in image_dir.iterdir())
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        ref = collect(ds, 5, workers=0)
    assert len(ref) == n // 5 and all(b.shape == (5, 3, 64, 64) and b.dtype == np.float32 for b in ref)
    assert all(b.flags.c_contiguous for b in ref)
    assert ds.stats.used == n - n % 5 and ds.stats.dropped == n % 5 and ds.stats.skipped == 0
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == (1 if n % 5 else 0)
    assert all(f"{n % 5} sample(s)" in d and "batch of 5" in d for d in drops)
    # ImageNet-normalised photos: roughly centred, not constant
    assert -1.5 < float(np.mean(ref[0])) < 1.5 and float(np.std(ref[0])) > 0.3
    for workers, prefetch in ((1, 1), (3, 4), (2, 0)):
        out = collect(ds, 5, workers=workers, prefetch=prefetch)
        assert len(out) == len(ref)
        for a, b in zip(ref, out, strict=True):
            np.testing.assert_array_equal(a, b)
    # batch i holds files 5i..5i+4 in order: compare with one-by-one decoding
    singles = collect(ds, 1, workers=0)
    np.testing.assert_array_equal(np.concatenate(singles[: n - n % 5]), np.concatenate(ref))


def test_default_batch_size_is_the_input_batch_dim(color_folder):
    ds = open_dataset(color_folder, [image_input(8, 12, batch=3)])
    assert [b["x"].shape for b in ds.batches()] == [(3, 3, 8, 12)] * 2


def test_order_shuffle_seed_and_limit(color_folder):
    spec = image_input(8, 12)

    def blue_values(**kw):
        ds = open_dataset(color_folder, [spec], PreprocessSpec(scale=1.0, color="BGR"), **kw)
        return [int(b["x"][0, 0, 0, 0]) for b in ds.batches(1)], ds.files

    plain, files = blue_values()
    assert plain == [0, 10, 20, 30, 40, 50]
    a, files_a = blue_values(shuffle=True, seed=3)
    b, _ = blue_values(shuffle=True, seed=3)
    c, _ = blue_values(shuffle=True, seed=4)
    assert a == b and sorted(a) == plain and a != plain and a != c
    assert [int(p.stem) * 10 for p in files_a] == a
    limited, _ = blue_values(shuffle=True, seed=3, limit=4)
    assert limited == a[:4]  # limit applies after the shuffle
    assert blue_values(limit=2)[0] == [0, 10]


def test_progress_announces_total_and_counts_consumed_samples(color_folder):
    calls = []

    def progress(advance=1, *, total=None, description=None):
        calls.append((advance, total, description))

    ds = open_dataset(color_folder, [image_input(8, 12)])
    it = ds.batches(4, progress=progress)
    next(it)
    assert calls == [(0, 4, "reading images")]  # 6 images -> one full batch of 4
    assert list(it) == []
    assert sum(c[0] for c in calls) == 4


def test_read_ahead_is_bounded(image_dir, monkeypatch):
    lock = threading.Lock()
    decoded = [0]
    real = image_folder_module.decode_image

    def counting(data, channels):
        with lock:
            decoded[0] += 1
        return real(data, channels)

    monkeypatch.setattr(image_folder_module, "decode_image", counting)
    ds = open_dataset(image_dir, [image_input(16, 16)])
    it = ds.batches(1, prefetch=2, workers=2)
    taken = 0
    for _ in range(4):
        next(it)
        taken += 1
        # submitted work is at most the consumed samples plus the window of 2 batches
        assert decoded[0] <= taken + 2
    it.close()  # cancels the rest
    assert decoded[0] <= 6 < len(ds)


@pytest.mark.parametrize("make", ["empty", "subfolders-only", "other-files"])
def test_empty_folders(tmp_path, make):
    root = tmp_path / "empty"
    root.mkdir()
    if make == "subfolders-only":
        (root / "a" / "b").mkdir(parents=True)
    if make == "other-files":
        (root / "readme.txt").write_text("x")
        (root / "pic.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError) as err:
        open_dataset(root, [image_input()])
    msg = str(err.value)
    assert "no images or tensors found in" in msg and str(root) in msg and ".jpg" in msg and ".npz" in msg


def test_path_errors(tmp_path, color_folder):
    with pytest.raises(InputError, match="no such folder"):
        open_dataset(tmp_path / "missing", [image_input()])
    with pytest.raises(InputError, match="is a file"):
        open_dataset(color_folder / "0.png", [image_input()])
    np.save(color_folder / "t.npy", np.zeros((3, 32, 32), np.float32))
    with pytest.raises(InputError, match="6 image file.*1 tensor file"):
        open_dataset(color_folder, [image_input()])


def test_all_bad_or_too_few(tmp_path, color_folder):
    root = tmp_path / "allbad"
    root.mkdir()
    (root / "a.jpg").write_text("x")
    (root / "b.png").write_bytes(b"")
    ds = open_dataset(root, [image_input()])
    with pytest.raises(InputError) as err:
        list(ds.batches(1))
    assert (
        "no usable images" in str(err.value) and "2 file(s)" in str(err.value) and "a.jpg" in str(err.value)
    )
    ds = open_dataset(color_folder, [image_input()])
    with pytest.raises(InputError, match="only 6 usable sample.*batch size 8"):
        list(ds.batches(8))


def test_model_input_errors(color_folder):
    two = [image_input(), TensorInfo("scale", (1, 2), np.float32)]
    with pytest.raises(InputError, match="one input.*npz"):
        open_dataset(color_folder, two)
    with pytest.raises(InputError, match="3 values.*1 channel"):
        open_dataset(color_folder, [image_input(c=1)], IMAGENET)


def test_layout_dtype_and_single_channel(color_folder):
    nhwc = open_dataset(color_folder, [image_input(8, 12, layout="NHWC", dtype=np.float16)])
    (b, *_) = list(nhwc.batches(2))
    assert b["x"].shape == (2, 8, 12, 3) and b["x"].dtype == np.float16
    np.testing.assert_allclose(b["x"][1, 0, 0], np.array([30, 20, 10]) / 255, atol=1e-3)  # RGB
    forced = open_dataset(color_folder, [image_input(8, 12)], PreprocessSpec(dtype="float16"))
    assert forced.inputs[0].dtype == np.float16
    assert next(forced.batches(1))["x"].dtype == np.float16
    gray = open_dataset(color_folder, [image_input(8, 12, c=1)])
    assert next(gray.batches(2))["x"].shape == (2, 1, 8, 12)


def test_letterbox_through_the_dataset(tmp_path):
    write_image(tmp_path / "w" / "wide.png", np.full((10, 40, 3), 255, np.uint8))
    spec = PreprocessSpec(resize="letterbox", pad_value=114, scale=1.0)
    ds = open_dataset(tmp_path / "w", [image_input(20, 20)], spec)
    x = next(ds.batches(1))["x"][0]
    assert np.all(x[:, :7] == 114) and np.all(x[:, 13:] == 114) and np.all(x[:, 8:12] == 255)
