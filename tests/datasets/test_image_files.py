"""Decoding real-world image files: grayscale, alpha, 16-bit, EXIF rotation, broken files, names."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from ds_helpers import image_input, write_image
from PIL import Image

from trtq._core.errors import InputError
from trtq.datasets import PreprocessSpec, open_dataset
from trtq.datasets.bad_file import BadFile
from trtq.datasets.decode import decode_image

PIXELS = PreprocessSpec(scale=1.0, color="BGR")  # output = pixel values in BGR order


def one(folder: Path, spec, preprocess=PIXELS) -> np.ndarray:
    ds = open_dataset(folder, [spec], preprocess, strict=True)
    (batch,) = list(ds.batches(1))
    return batch[spec.name][0]


def test_exif_orientation_is_honoured(tmp_path):
    # 20 rows x 40 cols: left half red, right half blue. Orientation 6 = rotate 90° clockwise to display.
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    # the tag is really there: ignoring it gives the stored 20x40 layout
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert stored.shape == (20, 40, 3)
    image = decode_image(data, 3)
    assert image.shape == (40, 20, 3)
    # after a clockwise turn the left (red) half is on top; BGR order: red = channel 2
    assert image[:18, :, 2].mean() > 200 and image[:18, :, 0].mean() < 50
    assert image[22:, :, 0].mean() > 200 and image[22:, :, 2].mean() < 50
    (tmp_path / "rot").mkdir()
    (tmp_path / "rot" / "r.jpg").write_bytes(data)
    x = one(tmp_path / "rot", image_input(40, 20))
    assert x[2, :18].mean() > 200  # through the dataset too (NCHW, BGR)


def test_grayscale_into_three_channels_and_colour_into_one(tmp_path):
    write_image(tmp_path / "g" / "gray.png", np.full((8, 8), 77, np.uint8))
    x = one(tmp_path / "g", image_input(8, 8, 3))
    assert x.shape == (3, 8, 8) and np.all(x == 77)
    write_image(tmp_path / "c" / "red.png", np.full((8, 8, 3), (0, 0, 255), np.uint8))
    y = one(tmp_path / "c", image_input(8, 8, 1))
    assert y.shape == (1, 8, 8) and np.all(np.abs(y - 0.299 * 255) <= 1)  # BT.601 luma of red


def test_alpha_is_dropped_not_blended(tmp_path):
    bgra = np.zeros((6, 6, 4), np.uint8)
    bgra[...] = (10, 20, 30, 0)  # fully transparent
    write_image(tmp_path / "a" / "rgba.png", bgra)
    x = one(tmp_path / "a", image_input(6, 6))
    np.testing.assert_array_equal(x[:, 0, 0], [10, 20, 30])


def test_16bit_png_becomes_8bit(tmp_path):
    write_image(tmp_path / "d" / "deep.png", np.full((5, 5), 0x1234, np.uint16))
    x = one(tmp_path / "d", image_input(5, 5))
    assert np.all(x == 0x12)


def test_unicode_names_upper_case_extensions_and_nested_folders(tmp_path, caplog):
    root = tmp_path / "mixed"
    write_image(root / "图像_é.png", np.full((4, 4, 3), 1, np.uint8))
    write_image(root / "B.JPG", np.full((4, 4, 3), 2, np.uint8))
    write_image(root / "sub" / "deeper" / "c.PnG", np.full((4, 4, 3), 3, np.uint8))
    write_image(root / "d.tiff", np.full((4, 4, 3), 4, np.uint8))
    write_image(root / "e.webp", np.full((4, 4, 3), 5, np.uint8))
    write_image(root / "f.bmp", np.full((4, 4, 3), 6, np.uint8))
    write_image(root / ".hidden.png", np.full((4, 4, 3), 9, np.uint8))
    write_image(root / ".cache" / "g.png", np.full((4, 4, 3), 9, np.uint8))
    (root / "notes.txt").write_text("not data")
    ds = open_dataset(root, [image_input(4, 4)], PIXELS, strict=True)
    rel = [p.relative_to(root).as_posix() for p in ds.files]
    assert rel == ["B.JPG", "d.tiff", "e.webp", "f.bmp", "sub/deeper/c.PnG", "图像_é.png"]
    values = [round(float(b["x"].mean())) for b in ds.batches(1)]
    assert values == [2, 4, 5, 6, 3, 1]  # JPEG is lossy but a flat image stays flat


def make_bad_files(root: Path, image_dir: Path) -> dict[str, str]:
    """Bad files next to good ones; returns name -> expected words of the reason."""
    data = (image_dir / "rocket.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    png = (image_dir / "coffee.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "text.jpg").write_text("this is not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "dangling.jpg").symlink_to(root / "missing-target.jpg")
    return {
        "truncated.jpg": "truncated JPEG",
        "truncated.png": "PNG",
        "text.jpg": "not an image",
        "empty.png": "empty file",
        "garbage.png": "cannot decode",
        "dangling.jpg": "cannot read",
    }


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, image_dir, caplog):
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(image_dir / "rocket.jpg", root / "good1.jpg")
    shutil.copy(image_dir / "coffee.png", root / "good2.png")
    expected = make_bad_files(root, image_dir)
    ds = open_dataset(root, [image_input(16, 16)])
    assert len(ds) == 8
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        batches = list(ds.batches(2))
    assert len(batches) == 1
    stats = ds.stats
    assert (stats.used, stats.skipped, stats.dropped) == (2, 6, 0)
    reasons = {Path(f).name: r for f, r in stats.skipped_files}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6 and all("\n" not in w for w in warnings)
    assert any("truncated.jpg" in w and "truncated JPEG" in w for w in warnings)
    # a second pass does not repeat the warnings, and yields the same data
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trtq.datasets"):
        again = list(ds.batches(2))
    assert not caplog.records
    np.testing.assert_array_equal(again[0]["x"], batches[0]["x"])


def test_strict_raises_naming_the_file(tmp_path, image_dir):
    root = tmp_path / "strict"
    root.mkdir()
    shutil.copy(image_dir / "rocket.jpg", root / "a.jpg")
    (root / "b.jpg").write_text("nope")
    ds = open_dataset(root, [image_input(16, 16)], strict=True)
    with pytest.raises(InputError) as err:
        list(ds.batches(1))
    assert "b.jpg" in str(err.value) and "not an image" in str(err.value)


def test_decode_image_reports_reasons():
    with pytest.raises(BadFile, match="empty"):
        decode_image(b"", 3)
    with pytest.raises(BadFile, match="not an image"):
        decode_image(b"GIF89a....", 3)


def test_an_image_over_opencvs_pixel_limit_is_called_too_large_not_corrupt(monkeypatch):
    from trtq.datasets.bad_file import BadFile
    from trtq.datasets.decode import decode_image

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")

    def over_limit(*_args):  # what OpenCV raises for a 40000 x 40000 PNG (building one takes GBs)
        raise cv2.error(
            "OpenCV(5.1.0) loadsave.cpp:80: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS"
        )

    monkeypatch.setattr(cv2, "imdecode", over_limit)
    with pytest.raises(BadFile, match="PNG too large for OpenCV's pixel limit"):
        decode_image(png.getvalue(), 3)


def test_a_pickled_object_npy_is_named_as_such_not_truncated(tmp_path, caplog):
    from trtq.datasets import TensorInfo

    np.save(tmp_path / "a.npy", np.zeros((3, 4, 4), np.float32))
    np.save(tmp_path / "z.npy", np.empty((3, 4, 4), object), allow_pickle=True)
    with caplog.at_level(logging.WARNING):
        ds = open_dataset(tmp_path, [TensorInfo("x", (1, 3, 4, 4), np.dtype(np.float32))])
        assert len(list(ds.batches(1))) == 1
    assert "z.npy: dtype object, expected numbers" in caplog.text
