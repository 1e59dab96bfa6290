"""The rule registry (one registered rule per file) and the verifier's comparison conventions."""

from __future__ import annotations

import pkgutil

import numpy as np
import pytest

import trtq.surgery.rules as rules_pkg
from trtq._core.errors import InputError
from trtq.surgery.rule import Rule, make_rules, rule_class, rule_names
from trtq.surgery.verify import compare_outputs


def test_one_registered_rule_per_file():
    modules = [m.name for m in pkgutil.iter_modules(rules_pkg.__path__) if not m.name.startswith("_")]
    assert sorted(modules) == sorted(rule_names())
    assert len(modules) >= 10
    for name in modules:
        cls = rule_class(name)
        assert issubclass(cls, Rule) and cls.__module__ == f"trtq.surgery.rules.{name}" and cls.summary


def test_unknown_rule_lists_choices():
    with pytest.raises(InputError, match="choices: .*fold_constants"):
        rule_class("no_such_rule")


def test_make_rules_keeps_fix_order_and_passes_options():
    rules = make_rules(["pow_square_to_mul", "fold_constants", "plugin_mapping"], plugins={"Det": ("P", "1")})
    assert [r.name for r in rules] == ["fold_constants", "pow_square_to_mul", "plugin_mapping"]
    assert rules[-1].plugins == {"Det": ("P", "1")}


def test_compare_outputs_conventions():
    a = np.array([1000.0, 1.0, 0.0], np.float32)
    assert compare_outputs("y", a, a + np.float32(0.001)).equal  # 1e-3 / 1000 = 1e-6 <= 1e-5
    assert not compare_outputs("y", a, a + np.float32(0.1)).equal  # 1e-4
    assert not compare_outputs("y", np.array([np.nan]), np.array([0.0])).equal
    assert compare_outputs("y", np.array([np.inf, np.nan]), np.array([np.inf, np.nan])).equal
    assert not compare_outputs("y", np.array([np.inf]), np.array([-np.inf])).equal
    assert not compare_outputs("i", np.array([1, 2]), np.array([1, 3])).equal  # integers: exact
    assert not compare_outputs("y", a, a.astype(np.float64)).equal  # dtype changed
    assert not compare_outputs("y", a, a[:2]).equal
