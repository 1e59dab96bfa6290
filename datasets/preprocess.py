"""Image preprocessing settings (:class:`PreprocessSpec`), named presets, and the transform.

Conventions, in the order they are applied to a decoded image (uint8, OpenCV's BGR order):

1. resize to the model's height×width with ``resize`` (see :mod:`trtq.datasets.resize`);
   ``pad_value`` (letterbox border) is in 0..255 pixel units;
2. channel order ``color`` ("RGB" flips OpenCV's BGR; "BGR" keeps it); 1-channel models get
   grayscale and ignore ``color``;
3. ``x = (pixel * scale - mean) / std`` per channel, in float32 (``mean``/``std`` have one value
   or one per channel, in the model's channel order);
4. ``layout`` "NCHW" or "NHWC" (``None``: inferred from the model input, the dim of size 1 or 3);
5. cast to ``dtype`` (``None``: the model input's dtype; integer dtypes are rounded and clipped).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtq._core.errors import InputError
from trtq.datasets.resize import RESIZERS

COLORS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become model input. The defaults are the "raw" preset: stretch, RGB, x/255."""

    resize: str = "stretch"
    color: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None
    dtype: str | None = None
    pad_value: float = 0.0
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.resize not in RESIZERS:
            raise InputError(f"unknown resize mode '{self.resize}'; choose one of: {', '.join(RESIZERS)}")
        color = str(self.color).upper()
        if color not in COLORS:
            raise InputError(f"unknown color order '{self.color}'; choose RGB or BGR")
        set_(self, "color", color)
        if self.layout is not None:
            layout = str(self.layout).upper()
            if layout not in LAYOUTS:
                raise InputError(f"unknown layout '{self.layout}'; choose NCHW or NHWC")
            set_(self, "layout", layout)
        if self.dtype is not None:
            try:
                set_(self, "dtype", np.dtype(self.dtype).name)
            except TypeError as exc:
                raise InputError(f"unknown dtype '{self.dtype}' (e.g. float32, float16, uint8)") from exc
        set_(self, "scale", _finite("scale", self.scale))
        if self.scale == 0:
            raise InputError("scale 0 makes every input the same constant: give the pixel scale (e.g. 1/255)")
        set_(self, "mean", _floats("mean", self.mean))
        set_(self, "std", _floats("std", self.std))
        if any(s == 0 for s in self.std):
            raise InputError(f"std {self.std} contains 0")
        pad = _finite("pad_value", self.pad_value)
        if not 0 <= pad <= 255:
            raise InputError(f"pad_value {pad} is outside 0..255 (it is in pixel units, before scale)")
        set_(self, "pad_value", pad)
        frac = _finite("crop_fraction", self.crop_fraction)
        if not 0 < frac <= 1:
            raise InputError(f"crop_fraction {frac} must be in (0, 1]")
        set_(self, "crop_fraction", frac)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PreprocessSpec:
        """The named preset (see :data:`PRESETS`), with ``overrides`` applied on top."""
        return cls(**{**get_preset(name).fields, **overrides})

    def replace(self, **changes: Any) -> PreprocessSpec:
        return dataclasses.replace(self, **changes)

    def check_channels(self, channels: int, where: str) -> None:
        """Raise :class:`InputError` if ``mean``/``std`` do not fit a model with ``channels``."""
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) not in (1, channels):
                raise InputError(
                    f"{field} has {len(values)} values but {where} has {channels} channel(s); "
                    f"give 1 or {channels} values"
                )


@dataclass(frozen=True)
class Preset:
    """A named bundle of :class:`PreprocessSpec` fields (never ``layout``/``dtype``: the model decides)."""

    name: str
    doc: str
    fields: dict[str, Any]


PRESETS: dict[str, Preset] = {}


def get_preset(name: str) -> Preset:
    """The registered preset ``name``; an unknown name is an :class:`InputError` listing them."""
    if name not in PRESETS:
        raise InputError(f"unknown preprocessing preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def register_preset(name: str, doc: str, **fields: Any) -> Preset:
    preset = Preset(name, doc, fields)
    PRESETS[name] = preset
    return preset


register_preset("raw", "stretch, RGB, x/255 (no mean/std): the defaults")
register_preset(
    "imagenet",
    "torchvision ImageNet evaluation: shorter side to size/0.875, centre crop, RGB, x/255, ImageNet mean/std",
    resize="center-crop",
    crop_fraction=0.875,
    color="RGB",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
register_preset(
    "paddleocr",
    "PaddleOCR detection: stretch, BGR (as cv2 reads; PaddleOCR normalises BGR with the RGB-ordered "
    "ImageNet statistics), x/255, ImageNet mean/std",
    resize="stretch",
    color="BGR",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
register_preset(
    "paddleocr-rec",
    "PaddleOCR recognition/direction classifier: stretch, BGR, (x/255 - 0.5)/0.5 "
    "(PaddleOCR pads the right side to keep the ratio; here the crop is stretched)",
    resize="stretch",
    color="BGR",
    mean=(0.5,),
    std=(0.5,),
)
register_preset(
    "yolo",
    "Ultralytics-style YOLO: letterbox with grey (114) border, RGB, x/255",
    resize="letterbox",
    color="RGB",
    pad_value=114.0,
)


def to_sample(
    image: np.ndarray, height: int, width: int, layout: str, dtype: np.dtype, spec: PreprocessSpec
) -> np.ndarray:
    """Turn one decoded image (uint8, H×W gray or H×W×3 BGR) into one sample (no batch dim)."""
    image = RESIZERS[spec.resize](image, height, width, spec)
    if image.ndim == 2:
        image = image[:, :, None]
    elif spec.color == "RGB":
        image = image[:, :, ::-1]
    channels = image.shape[2]
    mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
    x = image.astype(np.float32)
    x *= np.float32(spec.scale) / std
    x -= mean / std
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x, dtype=dtype)


def parse_number(value: Any) -> float:
    """``float(value)``, where a string may also be a fraction such as ``"1/255"``. Raises
    ``TypeError``/``ValueError``/``ZeroDivisionError`` as ``float`` and ``/`` do."""
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        return float(num) / float(den)
    return float(value)


def _finite(name: str, value: Any) -> float:
    """A finite float; strings may be fractions such as ``"1/255"``."""
    try:
        v = parse_number(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    return v


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, int | float):
        values = (values,)
    try:
        out = tuple(_finite(name, v) for v in values)
    except TypeError as exc:
        raise InputError(f"{name} must be a number or a list of numbers, got {values!r}") from exc
    if not out:
        raise InputError(f"{name} is empty")
    return out
