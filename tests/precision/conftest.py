"""Fixtures for the precision tests: tiny models from precision_tiny_models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from precision_tiny_models import conv_relu_model, two_conv_model


@pytest.fixture
def rng() -> np.random.RandomState:
    return np.random.RandomState(1234)


@pytest.fixture
def conv_relu() -> onnx.ModelProto:
    return conv_relu_model()


@pytest.fixture
def two_conv() -> onnx.ModelProto:
    return two_conv_model()
