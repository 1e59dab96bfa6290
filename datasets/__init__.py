"""trtq.datasets: images or tensors on disk → preprocessed, fixed-size numpy batches per model input.

Typical use::

    specs = resolve_input_specs(backend.inputs(), shapes={"x": (1, 3, 640, 640)}, batch_size=8)
    ds = open_dataset("imgs/", specs, PreprocessSpec.preset("paddleocr"), limit=500)
    for batch in ds.batches(8):          # {"x": float32 array of shape (8, 3, 640, 640)}
        ...
    print(ds.stats)                      # used / skipped files with reasons / dropped tail

The CLI options (``--data``, ``--shape``, ``--preset``, ...) live in
:mod:`trtq.datasets.cli_options`, the only module here that imports click.
"""

from trtq._core.tensors import TensorInfo
from trtq.datasets.batching import DatasetStats
from trtq.datasets.dataset import Dataset
from trtq.datasets.folder import open_dataset
from trtq.datasets.image_folder import IMAGE_EXTENSIONS, ImageGeometry, image_geometry
from trtq.datasets.input_spec import default_batch_size, parse_shape_arg, resolve_input_specs, static_inputs
from trtq.datasets.iterable import IterableDataset, from_iterable
from trtq.datasets.preprocess import PRESETS, PreprocessSpec
from trtq.datasets.tensor_folder import TENSOR_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "TENSOR_EXTENSIONS",
    "Dataset",
    "default_batch_size",
    "DatasetStats",
    "ImageGeometry",
    "IterableDataset",
    "PreprocessSpec",
    "from_iterable",
    "image_geometry",
    "open_dataset",
    "parse_shape_arg",
    "resolve_input_specs",
    "static_inputs",
    "TensorInfo",
]
