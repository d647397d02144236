"""What a run reports: the results summary, the paper's claims as data, diagnostics plots, and a
self-contained HTML page (+ Markdown).

- :mod:`~dualist.report.labels` — model and figure ids, and the display labels derived from them;
- :mod:`~dualist.report.summary` — the results rows, the paired comparison, the best model on dev;
- :mod:`~dualist.report.claims` — :class:`Claim` (id, supported, figures) and its text;
- :mod:`~dualist.report.plots`, :mod:`~dualist.report.tables`, :mod:`~dualist.report.html` — rendering.

The report stage that puts them together is :func:`dualist.stages.report_stage`. matplotlib loads only
when a plot is drawn.
"""

from __future__ import annotations

from dualist.report.claims import Claim
from dualist.report.html import ReportPaths, Section, write_report
from dualist.report.plots import plot_gap, plot_margins, plot_score_distributions, plot_score_evolution
from dualist.report.tables import markdown_table

__all__ = [
    "Claim",
    "write_report",
    "Section",
    "ReportPaths",
    "markdown_table",
    "plot_score_distributions",
    "plot_margins",
    "plot_score_evolution",
    "plot_gap",
]
