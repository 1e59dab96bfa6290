"""Fixtures for the datasets tests: synthetic image folders written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ds_helpers import write_image


@pytest.fixture
def color_folder(tmp_path: Path) -> Path:
    """Six solid-colour PNGs 0.png .. 5.png; pixel (B, G, R) of image k = (10*k, 20, 30)."""
    root = tmp_path / "colors"
    for k in range(6):
        write_image(root / f"{k}.png", np.full((8, 12, 3), (10 * k, 20, 30), np.uint8))
    return root
