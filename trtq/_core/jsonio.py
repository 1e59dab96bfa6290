"""JSON output for every result document: NaN/Inf as null, numpy values as Python, atomic files."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from trtq._core.atomic import atomic_write_text


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and non-finite floats as ``None``
    (JSON has no NaN; docs/SCHEMA.md reads ``null`` with ``nonfinite > 0`` as NaN/Inf)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any) -> str:
    """Indented JSON text of ``obj`` (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout when ``path`` is ``"-"``."""
    text = dumps(obj) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)
