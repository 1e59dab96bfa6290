"""Run trt_inner_checks.py against the real TensorRT 10 and 11 bindings, one subprocess each.

These tests prove API shape only (see trt_inner_checks.py): no engine is built anywhere here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

INNER = Path(__file__).with_name("trt_inner_checks.py")


@pytest.mark.parametrize("major", [10, 11])
def test_code_conforms_to_real_bindings(trt_bindings, major):
    b = trt_bindings[major]
    probe = b.run(["-c", "import tensorrt_bindings as t; print(t.__version__)"])
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == b.version
    inner = b.run(["-m", "pytest", str(INNER), "-q", "-p", "no:cacheprovider", "-o", "addopts="])
    report = inner.stdout + inner.stderr
    assert inner.returncode == 0, report[-6000:]
    passed = int(re.search(r"(\d+) passed", report).group(1))
    assert passed >= (23 if major == 10 else 8), report[-2000:]
    sys.stdout.write(report[-300:])
