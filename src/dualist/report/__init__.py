"""The report stage: diagnostics plots and a self-contained HTML page (+ Markdown) of the results.

matplotlib loads only when a plot is drawn, so importing :mod:`dualist.report` is cheap.
"""

from __future__ import annotations

from dualist.report.html import ReportPaths, Section, write_report
from dualist.report.plots import plot_gap, plot_margins, plot_score_distributions, plot_score_evolution
from dualist.report.tables import markdown_table

__all__ = [
    "write_report",
    "Section",
    "ReportPaths",
    "markdown_table",
    "plot_score_distributions",
    "plot_margins",
    "plot_score_evolution",
    "plot_gap",
]
