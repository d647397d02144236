"""Results tables as Markdown (README, report.md); the HTML report shares the cell rules."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

__all__ = ["markdown_table", "format_cell", "best_cells", "is_number", "md_escape", "MISSING"]

MISSING = "–"  # a row without that column, None or NaN


def is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def format_cell(value: Any, floatfmt: str = ".3f") -> str:
    """Text of one cell: floats with ``floatfmt``, integers as they are, missing values as ``–``.

    >>> format_cell(0.3456), format_cell(12), format_cell(None), format_cell(float("nan")), format_cell("CA")
    ('0.346', '12', '–', '–', 'CA')

    A value that rounds to zero reads as zero, not as a signed ``-0.000``:

    >>> format_cell(-0.0001), format_cell(-0.0004, ".4f")
    ('0.000', '-0.0004')
    """
    if value is None:
        return MISSING
    if is_number(value):
        if isinstance(value, Integral):
            return str(int(value))
        if math.isnan(float(value)):
            return MISSING
        text = format(float(value), floatfmt)
        return format(0.0, floatfmt) if text.startswith("-") and float(text) == 0 else text
    return str(value)


def best_cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
               floatfmt: str = ".3f") -> set[tuple[int, str]]:
    """``(row index, column)`` of the highest value in each metric column, to print in bold.

    A metric column holds at least one float and at least two numbers (integer-only columns such as
    counts are not ranked, nor are spreads: columns named ``... std``, where higher is not better).
    Ties are judged on the printed value, so every cell that *reads* as the best is bold.

    >>> sorted(best_cells([{"m": "a", "x": 0.3001}, {"m": "b", "x": 0.3004}, {"m": "c", "x": 0.1}], ["m", "x"]))
    [(0, 'x'), (1, 'x')]
    """
    best: set[tuple[int, str]] = set()
    for col in columns:
        if str(col).endswith(" std"):
            continue
        nums = [(i, float(r[col])) for i, r in enumerate(rows)
                if is_number(r.get(col)) and not math.isnan(float(r[col]))]
        if len(nums) < 2 or not any(not isinstance(rows[i][col], Integral) for i, _ in nums):
            continue
        top = format_cell(max(v for _, v in nums), floatfmt)
        best.update((i, col) for i, v in nums if format_cell(v, floatfmt) == top)
    return best


def md_escape(text: str) -> str:
    # HTML-escape so a name like "<script>" shows as text; escape pipes so it cannot split a cell.
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: str = ".3f", *,
                   bold_best: bool = False) -> str:
    """A GitHub-flavoured Markdown table, padded so the raw text lines up too.

    Columns holding numbers are right-aligned; with ``bold_best`` the best value of each metric
    column (see :func:`best_cells`) is bold. Text is HTML-escaped and ``|`` is escaped.

    >>> print(markdown_table([{"model": "CA", "MRR@10": 0.37}, {"model": "DE", "MRR@10": 0.31}],
    ...                      ["model", "MRR@10"], bold_best=True))
    | model |    MRR@10 |
    |:------|----------:|
    | CA    | **0.370** |
    | DE    |     0.310 |
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    bold = best_cells(rows, columns, floatfmt) if bold_best else set()
    numeric = {c: any(is_number(r.get(c)) for r in rows) for c in columns}
    body = []
    for i, r in enumerate(rows):
        cells = []
        for c in columns:
            text = md_escape(format_cell(r.get(c), floatfmt))
            cells.append(f"**{text}**" if (i, c) in bold else text)
        body.append(cells)
    header = [md_escape(str(c)) for c in columns]
    widths = [max(3, len(header[j]), *(len(b[j]) for b in body)) for j in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(
            cell.rjust(w) if numeric[c] else cell.ljust(w) for cell, w, c in zip(cells, widths, columns)
        ) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if numeric[c] else (":" + "-" * (w + 1))
                         for w, c in zip(widths, columns)) + "|"
    return "\n".join([line(header), sep, *(line(b) for b in body)])
