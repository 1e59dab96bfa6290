"""Fixtures for the TensorRT tests: the real bindings with stub native libraries (see trt_stubs)."""

from __future__ import annotations

import pytest
from trt_stubs import BINDINGS, TrtBindings, real_bindings


@pytest.fixture(scope="session")
def trt_bindings(tmp_path_factory: pytest.TempPathFactory) -> dict[int, TrtBindings]:
    """Both bindings versions, unpacked into separate folders, each with its own stubs."""
    return {major: real_bindings(major, tmp_path_factory.mktemp(f"trt{major}-stubs")) for major in BINDINGS}
