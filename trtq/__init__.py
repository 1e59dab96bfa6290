"""trtq: INT8 calibration and precision debugging for NVIDIA TensorRT.

The package is one namespace over five concept folders (see ARCHITECTURE.md):
``trtq.datasets`` → ``trtq.precision.backends`` → ``trtq.calib`` → ``trtq.precision`` →
``trtq.reports``, with ``trtq.surgery`` beside them. ``trtq._core`` holds what they share:
errors, lazy imports, atomic writes, config and ONNX loading.
"""

__version__ = "0.1.0"
