"""Fixtures for the report tests; the result producers live in ``_reportdata``."""

from __future__ import annotations

import pytest
from _reportdata import real_results_for, synthetic_compare


@pytest.fixture(scope="session")
def real_results(real_models, image_dir, tmp_path_factory) -> dict:
    """Measured compare, bisect and calib results (and histogram .npz) of the real PP-OCR cls model."""
    return real_results_for(real_models["cls"], image_dir, tmp_path_factory.mktemp("results"))


@pytest.fixture()
def small_compare() -> dict:
    """A 60-layer synthetic compare result (FP16, INT8, INT8 with pins; two FP16 NaN layers)."""
    return synthetic_compare(60, seed=1)
