"""Image files as samples for a model with one image input (1 or 3 channels, NCHW or NHWC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo
from trtq.datasets.bad_file import BadFile
from trtq.datasets.batching import Sample
from trtq.datasets.decode import decode_image
from trtq.datasets.preprocess import PreprocessSpec, to_sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageGeometry:
    """Height, width, channels and layout of a 4-D image input (batch dim excluded)."""

    height: int
    width: int
    channels: int
    layout: str


def image_geometry(spec: TensorInfo, layout: str | None = None) -> ImageGeometry:
    """Read H, W, C from a 4-D input; ``layout=None`` infers it from the dim of size 1 or 3
    (dim 1 is preferred: NCHW)."""
    if len(spec.shape) != 4:
        raise InputError(
            f"input '{spec.name}' has shape {spec.shape}; image folders need a 4-D image input "
            "(NCHW or NHWC): use a folder of .npy/.npz tensors for other inputs"
        )
    _, a, b, c = spec.shape
    if layout is None:
        layout = "NCHW" if a in (1, 3) else "NHWC" if c in (1, 3) else None
        if layout is None:
            raise InputError(
                f"input '{spec.name}' {spec.shape} has no channel dim of size 1 or 3 (at 1 or 3); "
                "images can feed only 1- or 3-channel inputs"
            )
    geometry = ImageGeometry(b, c, a, layout) if layout == "NCHW" else ImageGeometry(a, b, c, layout)
    if geometry.channels not in (1, 3):
        raise InputError(
            f"input '{spec.name}' {spec.shape} in layout {layout} has {geometry.channels} channels; "
            "images can feed only 1- or 3-channel inputs"
        )
    return geometry


class ImageFolder:
    """One sample per image file: decode (OpenCV), then :func:`~trtq.datasets.preprocess.to_sample`."""

    kind = "images"
    noun = "image"
    extensions = IMAGE_EXTENSIONS

    def __init__(
        self, files: Sequence[Path], inputs: Sequence[TensorInfo], preprocess: PreprocessSpec
    ) -> None:
        if len(inputs) != 1:
            raise InputError(
                f"image folders feed models with one input; this model has {[s.name for s in inputs]}: "
                "use a folder of .npz files with one array per input name"
            )
        self.spec = inputs[0]
        self.preprocess = preprocess
        self.geometry = image_geometry(self.spec, preprocess.layout)
        preprocess.check_channels(self.geometry.channels, f"input '{self.spec.name}'")
        self.files = list(files)
        self.open_skips: list[tuple[str, str]] = []

    @classmethod
    def from_files(
        cls,
        files: Sequence[Path],
        inputs: Sequence[TensorInfo],
        preprocess: PreprocessSpec | None,
        limit: int | None,
    ) -> ImageFolder:
        """``limit`` counts files (bad ones included)."""
        return cls(files[:limit] if limit is not None else files, inputs, preprocess or PreprocessSpec())

    def __len__(self) -> int:
        return len(self.files)

    def items(self, batch_size: int) -> list[Path]:
        return self.files

    def samples_per_item(self) -> float:
        return 1.0

    @staticmethod
    def item_file(item: Path) -> Path:
        return item

    def load(self, path: Path) -> list[Sample]:
        """Decode and preprocess one file; raises :class:`BadFile` with the reason."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadFile(f"cannot read ({exc.strerror or exc})") from exc
        image = decode_image(data, self.geometry.channels)
        g = self.geometry
        x = to_sample(image, g.height, g.width, g.layout, np.dtype(self.spec.dtype), self.preprocess)
        return [{self.spec.name: x}]
