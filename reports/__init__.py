"""trtq.reports: self-contained HTML error-heatmap reports from trtq's JSON results.

Public API (used by ``--report`` on ``calib run``, ``precision compare``, ``precision bisect``)::

    from trtq.reports import build_report, write_report
    html = build_report([compare_result, bisect_result], histograms="calib.npz", title="det INT8")
    write_report("report.html", [compare_result])

The functions are imported on first use, so ``import trtq.reports`` (and ``reports --help``)
does not load matplotlib and pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtq.reports.build import build_report, validate_result, write_report

__all__ = ["build_report", "write_report", "validate_result"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from trtq.reports import build

        return getattr(build, name)
    raise AttributeError(f"module 'trtq.reports' has no attribute {name!r}")
