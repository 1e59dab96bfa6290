"""trtq.surgery: find ONNX nodes TensorRT's ONNX parser rejects, and rewrite them provably.

- :func:`check_model` lists findings (support table of onnx-tensorrt's operators.md, or the
  installed parser's ``supports_model``), each naming the rule that fixes it;
- :func:`fix_model` applies rewrite rules (``trtq.surgery.rules``, one per file, registered) to a
  fixed point; :func:`fix_file` adds ONNX Runtime verification and atomic saving;
- :func:`verify_models` compares two models' outputs on the same inputs.
"""

from trtq.surgery.check import check_model
from trtq.surgery.findings import CheckReport, Finding
from trtq.surgery.fix import FixResult, fix_model
from trtq.surgery.pipeline import FixReport, fix_file
from trtq.surgery.rule import Match, Rule, make_rules, register_rule, rule_class, rule_names
from trtq.surgery.verify import VerifyResult, verify_models

__all__ = [
    "CheckReport",
    "Finding",
    "FixReport",
    "FixResult",
    "Match",
    "Rule",
    "VerifyResult",
    "check_model",
    "fix_file",
    "fix_model",
    "make_rules",
    "register_rule",
    "rule_class",
    "rule_names",
    "verify_models",
]
