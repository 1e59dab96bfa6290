"""trtq.surgery: find ONNX nodes TensorRT's ONNX parser rejects, and rewrite them provably.

- :func:`check_model` lists findings (support table of onnx-tensorrt's operators.md, or the
  installed parser's ``supports_model``), each naming the rule that fixes it;
- :func:`fix_model` applies rewrite rules (``trtq.surgery.rules``, one per file, registered) to a
  fixed point; :func:`fix_file` adds ONNX Runtime verification and atomic saving;
- :func:`verify_models` compares two models' outputs on the same inputs.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `surgery --help` does not load onnx and onnx-graphsurgeon.
_EXPORTS = {
    "check_model": "trtq.surgery.check",
    "CheckReport": "trtq.surgery.findings",
    "Finding": "trtq.surgery.findings",
    "FixResult": "trtq.surgery.fix",
    "fix_model": "trtq.surgery.fix",
    "FixReport": "trtq.surgery.pipeline",
    "fix_file": "trtq.surgery.pipeline",
    "Match": "trtq.surgery.rule",
    "Rule": "trtq.surgery.rule",
    "make_rules": "trtq.surgery.rule",
    "register_rule": "trtq.surgery.rule",
    "rule_class": "trtq.surgery.rule",
    "rule_names": "trtq.surgery.rule",
    "VerifyResult": "trtq.surgery.verify",
    "verify_models": "trtq.surgery.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trtq.surgery' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
