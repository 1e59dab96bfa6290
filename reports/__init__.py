"""trtq.reports: self-contained HTML error-heatmap reports from trtq's JSON results.

Public API (used by ``--report`` on ``calib run``, ``precision compare``, ``precision bisect``)::

    from trtq.reports import build_report, write_report
    html = build_report([compare_result, bisect_result], histograms="calib.npz", title="det INT8")
    write_report("report.html", [compare_result])
"""

from __future__ import annotations

from trtq.reports.build import build_report, validate_result, write_report

__all__ = ["build_report", "write_report", "validate_result"]
