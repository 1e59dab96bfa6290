"""The per-operator rewrite-status table: derived from the registry, complete, and in sync with docs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from trtq.surgery import rewrite_status as rs
from trtq.surgery import support_table as table
from trtq.surgery.cli import main
from trtq.surgery.rule import rule_class, rule_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "SURGERY_OPS.md"

# Every unsupported operator has a rule or a recorded reason why none exists.
EXPECTED_MISSING: set[str] = set()


def test_table_covers_exactly_the_unsupported_operators():
    rows = rs.status_table()["unsupported"]
    assert [r.op for r in rows] == sorted(op for op, types in table.OP_TYPES.items() if not types)
    assert len(rows) == 42
    assert {r.status for r in rows} <= set(rs.STATUSES)


def test_ops_without_rule_or_reason():
    assert set(rs.missing()) == EXPECTED_MISSING


def test_every_rule_row_names_registered_rules_that_rewrite_it():
    for section in rs.status_table().values():
        for row in section:
            if row.status == "rule":
                assert row.rules and all(row.op in rule_class(r).rewrites for r in row.rules), row
                assert row.note, f"{row.op}: no conditions recorded"
            else:
                assert not row.rules


def test_every_rewritten_op_is_unsupported_contrib_or_a_restriction_row():
    unsupported = set(rs.unsupported_ops())
    for name in rule_names():
        for op in rule_class(name).rewrites:
            assert op in unsupported or op in rs.CONTRIB_CONDITIONS or op in rs.RESTRICTIONS, (name, op)


def test_no_stale_reasons_or_restriction_rows():
    """A reason why no rule exists must go when a rule arrives; a restriction row needs its rule."""
    for op in rs.NO_REWRITE:
        assert op in rs.unsupported_ops() and not rs.rules_for(op), op
    for op in rs.RESTRICTIONS:
        assert rs.rules_for(op), f"restriction row {op} has no rule"
    for op in rs.CONTRIB_CONDITIONS:
        assert rs.rules_for(op), f"contrib op {op} has no rule"


def test_qoperator_ops_are_rewritten_by_this_branchs_rules():
    got = {op: rs.op_status(op).rules for op in ("QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear")}
    assert got == {
        "QLinearConv": ("qlinear_conv",),
        "QLinearMatMul": ("qlinear_matmul",),
        "DynamicQuantizeLinear": ("dynamic_quantize_linear",),
    }
    assert rs.op_status("Bernoulli").status == "none" and "random" in rs.op_status("Bernoulli").note


def test_why_no_rule_lines():
    assert rs.why_no_rule("QLinearConv").startswith("qlinear_conv did not apply; it needs: ")
    assert rs.why_no_rule("StringSplit") == "no rule: STRING tensors: TensorRT has no string type"
    assert "--plugin MyOp=" in rs.why_no_rule("MyOp", "my.domain")


def test_committed_doc_is_the_generated_table():
    assert DOC.read_text() == rs.markdown(), "regenerate: surgery ops --markdown > docs/SURGERY_OPS.md"


def test_ops_command_markdown_and_json():
    runner = CliRunner()
    res = runner.invoke(main, ["ops", "--markdown"])
    assert res.exit_code == 0 and res.output == rs.markdown()
    res = runner.invoke(main, ["ops", "--json", "-"])
    assert res.exit_code == 0
    import json

    data = json.loads(res.stdout)
    assert data["kind"] == "surgery-ops"
    row = next(r for r in data["contrib"] if r["op"] == "QLinearAdd")
    assert row == {"op": "QLinearAdd", "domain": "com.microsoft", "status": "rule", "rules": ["qlinear_lookup"],
                   "note": rs.CONTRIB_CONDITIONS["QLinearAdd"]}  # fmt: skip
