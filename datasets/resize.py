"""Resize modes: fit a decoded image (uint8, H×W or H×W×C) to the model's height and width.

Each mode is a function ``(image, height, width, spec) -> image`` registered by name with
:func:`register_resize`; :class:`~trtq.datasets.preprocess.PreprocessSpec` accepts exactly the
registered names. All modes use bilinear interpolation (``cv2.INTER_LINEAR``, the OpenCV default
that PaddleOCR and most cv2 pipelines use) and work in 0..255 pixel units, before scale/mean/std.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trtq.datasets.preprocess import PreprocessSpec

ResizeFn = Callable[[np.ndarray, int, int, "PreprocessSpec"], np.ndarray]
RESIZERS: dict[str, ResizeFn] = {}


def register_resize(name: str) -> Callable[[ResizeFn], ResizeFn]:
    """Register a resize mode under ``name`` (used by ``--resize NAME``)."""

    def add(fn: ResizeFn) -> ResizeFn:
        RESIZERS[name] = fn
        return fn

    return add


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    import cv2  # here, not at module level: commands that read no images never load OpenCV

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


@register_resize("stretch")
def stretch(image: np.ndarray, height: int, width: int, spec: PreprocessSpec) -> np.ndarray:
    """Resize to exactly height×width, ignoring the aspect ratio."""
    return _resize(image, height, width)


@register_resize("letterbox")
def letterbox(image: np.ndarray, height: int, width: int, spec: PreprocessSpec) -> np.ndarray:
    """Scale by ``min(height/h, width/w)`` (aspect ratio kept), centre the result on a canvas
    filled with ``spec.pad_value``; the extra border is split evenly (odd pixel at bottom/right)."""
    h, w = image.shape[:2]
    r = min(height / h, width / w)
    nh, nw = min(height, max(1, round(h * r))), min(width, max(1, round(w * r)))
    canvas = np.full((height, width, *image.shape[2:]), spec.pad_value, dtype=image.dtype)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top : top + nh, left : left + nw] = _resize(image, nh, nw)
    return canvas


#: center-crop resizes the whole image before cutting the window, unless that would be more than
#: this many times the window's pixels.
_MAX_RESIZED = 64


@register_resize("center-crop")
def center_crop(image: np.ndarray, height: int, width: int, spec: PreprocessSpec) -> np.ndarray:
    """Scale so the image covers height×width divided by ``spec.crop_fraction`` (the shorter
    side, relative to the target, is resized first), then cut the centred height×width window.

    With ``crop_fraction=0.875`` and a 224×224 input this is the classic ImageNet evaluation:
    shorter side to 256, centre crop 224.
    """
    h, w = image.shape[:2]
    r = max(height / h, width / w) / spec.crop_fraction
    nh, nw = max(height, round(h * r)), max(width, round(w * r))
    if nh * nw > _MAX_RESIZED * height * width:
        # a strip (e.g. 1 x 3000): resizing it whole would allocate gigabytes; keep the source
        # rows / columns the window reads (a margin of 2 source pixels for the interpolation)
        ch, cw = min(h, int(height / r) + 4), min(w, int(width / r) + 4)
        t, le = (h - ch) // 2, (w - cw) // 2
        image, nh, nw = image[t : t + ch, le : le + cw], max(height, round(ch * r)), max(width, round(cw * r))
    resized = _resize(image, nh, nw)
    top, left = (nh - height) // 2, (nw - width) // 2
    return resized[top : top + height, left : left + width]
