"""`calibrate_dataset`: the library's resumable calibration, on PP-OCRv4 det and real images."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.atomic import output_group
from trtq._core.errors import InputError, TrtqError
from trtq._core.onnx_model import load_onnx
from trtq._core.tensors import TensorInfo
from trtq.calib.cache import read_cache
from trtq.calib.histogram import HistogramSet
from trtq.calib.resumable import calibrate_dataset
from trtq.calib.run import calibrate
from trtq.datasets.folder import open_dataset
from trtq.datasets.preprocess import PreprocessSpec

pytestmark = pytest.mark.slow


def _dataset(image_dir, limit=None):
    spec = TensorInfo("x", (1, 3, 160, 160), np.dtype(np.float32))
    return open_dataset(image_dir, [spec], PreprocessSpec.preset("paddleocr"), limit=limit)


class _StopAfter:
    """The dataset, interrupted (as by Ctrl-C) after ``n`` batches."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.files = dataset.files

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size, progress=None):
        for i, batch in enumerate(self.dataset.batches(batch_size)):
            if i == self.n:
                raise KeyboardInterrupt
            yield batch


def test_interrupted_calibration_resumes_to_the_one_pass_result(real_models, image_dir, tmp_path):
    model = load_onnx(real_models["det"])
    whole = calibrate_dataset(model, _dataset(image_dir, 4), tmp_path / "whole.cache", batch_size=1)

    cache = tmp_path / "resumed.cache"
    # inside the output group every command runs in: the failed run's outputs are taken back, but
    # not its checkpoint
    with pytest.raises(TrtqError, match="--resume"), output_group():
        calibrate_dataset(
            model, _StopAfter(_dataset(image_dir, 4), 3), cache, batch_size=1, checkpoint_every=2
        )
    saved = HistogramSet.load(str(cache) + ".hist.npz")
    assert saved.samples == 2 and not cache.exists()  # the checkpoint, and no half-written cache
    resumed = calibrate_dataset(model, _dataset(image_dir, 4), cache, batch_size=1, resume=True)
    assert resumed.resumed_samples == 2
    assert read_cache(cache).scales == read_cache(tmp_path / "whole.cache").scales
    assert resumed.result.histograms.samples == whole.result.histograms.samples == 4


def test_a_resumed_auto_run_measures_on_the_batches_a_whole_run_does(real_models, image_dir, tmp_path):
    """auto measuring on 2 of 6 images picks them by index over the whole data (here batches 3
    and 5): interrupted after 5 and resumed from the checkpoint at 4, the run offers the skipped
    batches to the choice as it reads past them, and measures on the same two."""
    from trtq.calib.auto import batch_priority

    assert sorted(sorted(range(6), key=batch_priority)[:2]) == [3, 5]  # one skipped, one new
    model, params = load_onnx(real_models["det"]), {"auto_samples": 2}
    whole = calibrate_dataset(
        model, _dataset(image_dir, 6), tmp_path / "whole.cache", batch_size=1, params=params
    )
    first_two = calibrate(model, list(_dataset(image_dir, 2).batches(1)), params=params)
    assert first_two.amax != whole.result.amax  # the first two images would give other ranges
    cache = tmp_path / "resumed.cache"
    with pytest.raises(TrtqError, match="--resume"):
        calibrate_dataset(
            model,
            _StopAfter(_dataset(image_dir, 6), 5),
            cache,
            batch_size=1,
            checkpoint_every=2,
            params=params,
        )
    resumed = calibrate_dataset(
        model, _dataset(image_dir, 6), cache, batch_size=1, resume=True, params=params
    )
    assert resumed.resumed_samples == 4
    assert resumed.result.choices == whole.result.choices
    assert read_cache(cache).scales == read_cache(tmp_path / "whole.cache").scales


def test_resume_refuses_other_files_and_a_missing_checkpoint(real_models, image_dir, tmp_path):
    model = load_onnx(real_models["det"])
    cache = tmp_path / "c.cache"
    with pytest.raises(InputError, match="nothing to resume"):
        calibrate_dataset(model, _dataset(image_dir, 2), cache, batch_size=1, resume=True)
    calibrate_dataset(model, _dataset(image_dir, 2), cache, batch_size=1)
    hs = HistogramSet.load(str(cache) + ".hist.npz")
    hs.sources = ["elsewhere/a.png", "elsewhere/b.png"]
    hs.save(str(cache) + ".hist.npz")
    with pytest.raises(InputError, match="same data in the same order"):
        calibrate_dataset(model, _dataset(image_dir, 4), cache, batch_size=1, resume=True)


def test_resume_with_nothing_new_still_measures_auto_on_the_first_samples(real_models, image_dir, tmp_path):
    """Every sample is already in the histograms: the histogram pass has nothing to do, and auto
    (the default) measures on the skipped first samples, giving the one-pass cache again."""
    model = load_onnx(real_models["det"])
    cache = tmp_path / "c.cache"
    first = calibrate_dataset(model, _dataset(image_dir, 3), cache, batch_size=1)
    assert first.result.method == "auto" and first.result.choices
    before = cache.read_bytes()
    again = calibrate_dataset(model, _dataset(image_dir, 3), cache, batch_size=1, resume=True)
    assert again.resumed_samples == 3 and again.result.batches == 0
    assert cache.read_bytes() == before


def test_resume_refuses_another_models_histograms_and_load_refuses_corrupt_ones(
    real_models, image_dir, tmp_path
):
    det, cls = load_onnx(real_models["det"]), load_onnx(real_models["cls"])
    cache = tmp_path / "c.cache"
    calibrate_dataset(det, _dataset(image_dir, 2), cache, batch_size=1)
    spec = TensorInfo("x", (1, 3, 48, 192), np.dtype(np.float32))
    data = open_dataset(image_dir, [spec], PreprocessSpec.preset("paddleocr-rec"), limit=4)
    with pytest.raises(InputError, match="made for another model"):
        calibrate_dataset(cls, data, cache, batch_size=1, resume=True)

    hist = str(cache) + ".hist.npz"
    for field, value, message in (
        ("upper", np.nan, "ranges must be finite"),
        ("counts", -1, "counts must be finite"),
    ):
        with np.load(hist) as z:
            arrays = dict(z)
        arrays[field] = arrays[field] * 0 + value
        bad = tmp_path / f"bad-{field}.npz"
        np.savez(bad, **arrays)
        with pytest.raises(InputError, match=message):
            HistogramSet.load(bad)
    with pytest.raises(InputError, match=r"not a \.npz of arrays|not a trtq histogram file"):
        HistogramSet.load(real_models["cls"])
