"""trtq: INT8 calibration and precision debugging for NVIDIA TensorRT.

The package is one namespace over five concept folders (see ARCHITECTURE.md):
``trtq.datasets`` → ``trtq.runtime`` → ``trtq.calib`` → ``trtq.precision`` →
``trtq.reports``, with ``trtq.surgery`` beside them. ``trtq._core`` holds what they share:
errors, TensorRT imports, atomic writes, config and ONNX loading.
"""

__version__ = "0.1.0"


def _add_source_checkout_path() -> None:
    # In a source checkout the concept folders (calib/, precision/, ...) sit beside trtq/ and are
    # mapped into this namespace by pyproject.toml at install time. When `trtq` is imported
    # straight from the checkout (e.g. `python -m pytest` from the repository root puts the
    # checkout first on sys.path), search the root too so that `trtq.calib` still resolves.
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "calib")) and os.path.isfile(
        os.path.join(root, "calib", "cache.py")
    ):
        if root not in __path__:
            __path__.append(root)


_add_source_checkout_path()
