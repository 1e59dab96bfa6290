"""One base for every result document (docs/SCHEMA.md): what every command's JSON shares.

Every document starts with the same envelope, stamped here and nowhere else::

    {"kind": str, "schema": 1, "trtq_version": str, "created_by": str, "backend": str | null, ...}

``backend`` is where the numbers came from: the backend that actually ran (``"onnxruntime"``,
``"onnxruntime (emulated)"``, ``"tensorrt 10.16.1"``, a plug-in's name), or ``null`` when the
command ran no model. ``created_by`` is the command that wrote the document (``"calib run"``) or
``"python"`` for the library API. Readers accept documents without the newer envelope keys.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
PYTHON_API = "python"


def result_document(kind: str, *, backend: str | None, created_by: str | None = None, **body: Any) -> dict:
    """A result document of ``kind``: the common envelope followed by ``body`` (in its order)."""
    import trtq

    return {
        "kind": kind,
        "schema": SCHEMA_VERSION,
        "trtq_version": trtq.__version__,
        "created_by": created_by or PYTHON_API,
        "backend": backend,
        **body,
    }
