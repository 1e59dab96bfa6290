"""The rooms' import rule (ARCHITECTURE.md): data flows datasets → runtime → calib → precision →
reports, and a library module imports nothing from a room downstream of its own; surgery stands
beside the flow and imports none of the rooms. Command-line front ends (``cli*.py``, and the
argument groups of ``trtq/_core/args.py``) may orchestrate several rooms. ``trtq._core`` is below everything and imports no room."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOW = ["datasets", "runtime", "calib", "precision", "reports"]
FOLDERS = {
    "_core": REPO / "trtq" / "_core",
    "runtime": REPO / "trtq" / "runtime",
    **{room: REPO / room for room in ("datasets", "calib", "precision", "reports", "surgery")},
}
ROOMS = ["_core", *FLOW, "surgery"]


def allowed(room: str) -> set[str]:
    """The rooms a library module of ``room`` may import (its own included)."""
    if room == "_core":
        return {"_core"}
    if room == "surgery":
        return {"_core", "surgery"}
    return {"_core", *FLOW[: FLOW.index(room) + 1]}


def imported_rooms(path: Path) -> set[tuple[str, int]]:
    """(room, line) for every ``trtq.<room>`` import in the file, lazy imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "trtq" and len(parts) > 1 and parts[1] in ROOMS:
                found.add((parts[1], node.lineno))
    return found


def library_modules(room: str) -> list[Path]:
    return [
        p for p in sorted(FOLDERS[room].rglob("*.py")) if not p.name.startswith("cli") and p.name != "args.py"
    ]


@pytest.mark.parametrize("room", ROOMS)
def test_library_modules_import_nothing_downstream(room: str):
    bad = [
        f"{path.relative_to(REPO)}:{line} imports trtq.{other}"
        for path in library_modules(room)
        for other, line in sorted(imported_rooms(path))
        if other not in allowed(room)
    ]
    assert not bad, "\n".join(bad)


def test_the_rule_catches_an_upstream_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from trtq.precision.emulate import folded\n")
    assert ("precision", 2) in imported_rooms(probe) and "precision" not in allowed("calib")
