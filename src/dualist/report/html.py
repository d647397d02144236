"""The report: one self-contained ``index.html`` and a ``report.md`` with its PNGs alongside.

The HTML has no external reference at all (images are ``data:`` URIs, the CSS is inline, there is
no script), so it can be mailed or archived as one file. Every user-provided string is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from typing import Any

from dualist._io import atomic_write, jsonable
from dualist.report.tables import best_cells, format_cell, is_number, markdown_table, md_escape

__all__ = ["write_report", "Section", "ReportPaths", "markdown_table"]

logger = logging.getLogger(__name__)

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.95em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }
th { border-bottom: 2px solid #888; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
section { margin-top: 2em; }
code { background: #f4f4f4; padding: 0 0.2em; }
""".strip()


@dataclass(frozen=True)
class Section:
    """One diagnostics section: a title, text (paragraphs split on blank lines), an image, a table.

    ``table`` is a list of row dicts, or ``{"rows": [...], "columns": [...]}``; columns default to
    the rows' keys in first-seen order.
    """

    title: str
    text: str = ""
    image: str | Path | None = None
    table: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None
    columns: Sequence[str] | None = None

    @classmethod
    def coerce(cls, obj: Section | Mapping[str, Any]) -> Section:
        if isinstance(obj, Section):
            return obj
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ValueError(f"section {obj.get('title')!r} has unknown keys {unknown}; allowed: {sorted(allowed)}")
        if "title" not in obj:
            raise ValueError(f"a section needs a 'title' (got keys {sorted(obj)})")
        return cls(**obj)

    def table_rows(self) -> list[Mapping[str, Any]]:
        if isinstance(self.table, Mapping):
            if "rows" not in self.table:
                raise ValueError(f"section {self.title!r}: a table given as a mapping needs 'rows'")
            return list(self.table["rows"])
        return list(self.table or ())

    def table_columns(self) -> list[str]:
        columns = self.table.get("columns") if isinstance(self.table, Mapping) else None
        if columns is None:
            columns = self.columns
        if columns is not None:
            return list(columns)
        cols: list[str] = []
        for row in self.table_rows():
            cols.extend(k for k in row if k not in cols)
        return cols


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`write_report` wrote: the HTML page, the Markdown page and the PNGs beside it."""

    html: Path
    markdown: Path
    images: tuple[Path, ...]


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _is_num_col(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    return any(is_number(r.get(col)) for r in rows)


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], floatfmt: str, *,
                bold_best: bool) -> str:
    bold = best_cells(rows, columns, floatfmt) if bold_best else set()
    num = {c: _is_num_col(rows, c) for c in columns}
    cls = {c: ' class="num"' if num[c] else "" for c in columns}
    out = ["<table>", "<thead><tr>" + "".join(f"<th{cls[c]}>{_esc(c)}</th>" for c in columns) + "</tr></thead>",
           "<tbody>"]
    for i, r in enumerate(rows):
        cells = []
        for c in columns:
            text = _esc(format_cell(r.get(c), floatfmt))
            cells.append(f"<td{cls[c]}>" + (f"<strong>{text}</strong>" if (i, c) in bold else text) + "</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for key, value in jsonable(dict(settings)).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append({"setting": name, "value": value if isinstance(value, str) else json.dumps(value)})
    return rows


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _timing_rows(timings: Mapping[str, float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"stage": k, "seconds": float(v), "h:mm:ss": _hms(float(v))}
                                  for k, v in timings.items()]
    if len(rows) > 1 and not any(str(k).lower() == "total" for k in timings):
        total = sum(float(v) for v in timings.values())
        rows.append({"stage": "total", "seconds": total, "h:mm:ss": _hms(total)})
    return rows


def _place_images(sections: Sequence[Section], out_dir: Path) -> dict[int, Path]:
    """Make every section image a file in ``out_dir`` (copying it in when needed) for report.md."""
    out = out_dir.resolve()
    sources: dict[int, Path] = {}
    for k, sec in enumerate(sections):
        if sec.image is None:
            continue
        src = Path(sec.image)
        if not src.is_file():
            raise FileNotFoundError(f"section {sec.title!r}: image {src} does not exist")
        if src.suffix.lower() not in _MIME:
            raise ValueError(f"section {sec.title!r}: image {src} is not one of {sorted(_MIME)}")
        sources[k] = src.resolve()
    # Images already in out_dir keep their names; the others are copied in under a free name.
    taken = {src.name: src for src in sources.values() if src.parent == out}
    placed: dict[int, Path] = {}
    for k, src in sources.items():
        if src.parent == out:
            placed[k] = src
            continue
        dest, n = out / src.name, 2
        while dest.name in taken and taken[dest.name] != src:
            dest, n = out / f"{src.stem}-{n}{src.suffix}", n + 1
        if dest.name not in taken:
            shutil.copyfile(src, dest)
            taken[dest.name] = src
        placed[k] = dest
    return placed


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)
    # The temporary file behind atomic_write is created 0600; a report is meant to be shared/served.
    os.chmod(path, 0o644)


def _data_uri(path: Path) -> str:
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{_MIME[path.suffix.lower()]};base64,{payload}"


def write_report(out_dir: str | Path, *, title: str, table_rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[str], sections: Iterable[Section | Mapping[str, Any]] = (),
                 settings: Mapping[str, Any] | None = None, timings: Mapping[str, float] | None = None,
                 version: str | None = None, notes: Iterable[str] = (), floatfmt: str = ".3f",
                 generated: datetime | None = None) -> ReportPaths:
    """Write ``out_dir/index.html`` (self-contained) and ``out_dir/report.md`` (+ PNGs beside it).

    Both hold the same content, in order: title, generation date and package ``version``, ``notes``,
    the results table (rows = models or conditions; ``columns`` chooses and orders the keys, the first
    usually the model name; the best value of each metric column in bold), each diagnostics
    ``section`` (``{"title", "text", "image", "table", "columns"}``, all but ``title`` optional;
    or a :class:`Section`; ``table`` is a list of row dicts or ``{"rows", "columns"}``), the
    ``settings`` (nested mappings flattened to dotted keys) and the wall time of each stage in
    ``timings`` (seconds; a total row is added unless a stage is named "total"). ``version``
    defaults to dualist's own; ``generated`` (default: now, UTC) fixes the date for tests.
    Images outside ``out_dir`` are copied in (renamed ``name-2.png``... on a clash) for report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    secs = [Section.coerce(s) for s in sections]
    for sec in secs:  # fail on a malformed table before anything is written
        sec.table_rows()
    notes = [str(n) for n in notes]
    if version is None:
        from dualist import __version__ as version
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M %Z").strip()
    images = _place_images(secs, out_dir)
    setting_rows = _flatten(settings or {})
    timing_rows = _timing_rows(timings or {})

    # --- HTML -------------------------------------------------------------------------------
    h = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{_esc(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
         f"<h1>{_esc(title)}</h1>",
         f'<p class="meta">Generated {_esc(when)} by dualist {_esc(version)}</p>']
    if notes:
        h.append("<section><h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul></section>")
    h += ["<section><h2>Results</h2>", _html_table(table_rows, columns, floatfmt, bold_best=True), "</section>"]
    for k, sec in enumerate(secs):
        h.append(f"<section><h2>{_esc(sec.title)}</h2>")
        h += [f"<p>{_esc(p)}</p>" for p in _paragraphs(sec.text)]
        if k in images:
            h.append(f'<figure><img src="{_data_uri(images[k])}" alt="{_esc(sec.title)}"></figure>')
        if sec.table_rows():
            h.append(_html_table(sec.table_rows(), sec.table_columns(), floatfmt, bold_best=False))
        h.append("</section>")
    if setting_rows:
        h += ["<section><h2>Settings</h2>", _html_table(setting_rows, ["setting", "value"], floatfmt,
                                                        bold_best=False), "</section>"]
    if timing_rows:
        h += ["<section><h2>Wall time per stage</h2>",
              _html_table(timing_rows, ["stage", "seconds", "h:mm:ss"], ".1f", bold_best=False), "</section>"]
    h += ["</body>", "</html>", ""]

    # --- Markdown ---------------------------------------------------------------------------
    m = [f"# {md_escape(title)}", "", f"_Generated {md_escape(when)} by dualist {md_escape(version)}_", ""]
    if notes:
        m += ["## Notes", "", *(f"- {md_escape(n)}" for n in notes), ""]
    m += ["## Results", "", markdown_table(table_rows, columns, floatfmt, bold_best=True), ""]
    for k, sec in enumerate(secs):
        m += [f"## {md_escape(sec.title)}", ""]
        for p in _paragraphs(sec.text):
            m += [md_escape(p), ""]
        if k in images:
            m += [f"![{md_escape(sec.title)}]({quote(images[k].name)})", ""]
        if sec.table_rows():
            m += [markdown_table(sec.table_rows(), sec.table_columns(), floatfmt), ""]
    if setting_rows:
        m += ["## Settings", "", markdown_table(setting_rows, ["setting", "value"], floatfmt), ""]
    if timing_rows:
        m += ["## Wall time per stage", "", markdown_table(timing_rows, ["stage", "seconds", "h:mm:ss"], ".1f"), ""]

    html_path, md_path = out_dir / "index.html", out_dir / "report.md"
    _write_text(html_path, "\n".join(h))
    _write_text(md_path, "\n".join(m))
    logger.info("wrote report to %s", html_path)
    return ReportPaths(html_path, md_path, tuple(images.values()))
