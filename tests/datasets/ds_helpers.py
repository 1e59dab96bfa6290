"""Helpers shared by the datasets tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trtq.datasets import TensorInfo


def image_input(
    h: int = 32, w: int = 32, c: int = 3, batch: int = 1, layout: str = "NCHW", dtype=np.float32
) -> TensorInfo:
    shape = (batch, c, h, w) if layout == "NCHW" else (batch, h, w, c)
    return TensorInfo("x", shape, np.dtype(dtype))


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encode with OpenCV and write the bytes (works for unicode names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    ok, buf = cv2.imencode(".jpg" if ext == ".jpeg" else ext, image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path
