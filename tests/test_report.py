"""Report: plots are real PNGs, the HTML is self-contained and escaped, tables are exact."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from dualist.diagnostics import (
    ScoreDistributions,
    gap_table,
    normalized_margins,
    score_distributions,
    score_evolution,
)
from dualist.report import (
    ReportPaths,
    Section,
    markdown_table,
    plot_gap,
    plot_margins,
    plot_score_distributions,
    plot_score_evolution,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fake_runs(seed=0):
    rng = np.random.default_rng(seed)
    qrels, runs = {}, {"CA": {}, "DE <b>": {}}
    for q in range(40):
        qid = f"q{q:02d}"
        pos = {f"p{q}_{i}": 1 for i in range(1 + q % 3)}
        qrels[qid] = pos
        docs = [*pos, *(f"n{q}_{j}" for j in range(20))]
        for name, sep, scale in (("CA", 2.0, 5.0), ("DE <b>", 0.7, 0.05)):
            runs[name][qid] = {d: scale * (rng.normal() + (sep if d in pos else 0.0)) for d in docs}
    return qrels, runs


def _fake_evolution(rng, scale):
    recs = [{"step": s, "query_id": "q07", "doc_ids": ["a", "b", "c", "x", "y"], "labels": [1, 1, 0, 0, 0],
             "scores": (scale * (np.array([1, 1, -1, -1, -1]) * s / 100 + rng.normal(size=5))).tolist()}
            for s in range(0, 101, 10)]
    return score_evolution(recs)


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024


@pytest.fixture(scope="module")
def plots(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    qrels, runs = _fake_runs()
    rng = np.random.default_rng(3)
    dists = {m: score_distributions(r, qrels, standardize="query_z") for m, r in runs.items()}
    margins = {m: normalized_margins(r, qrels) for m, r in runs.items()}
    evols = {"CA": _fake_evolution(rng, 3.0), "DE $x$": _fake_evolution(rng, 0.1)}
    gaps = gap_table({"CA": {"train": {"ndcg@10": 0.8}, "test": {"ndcg@10": 0.7}},
                      "DE": {"train": {"ndcg@10": 0.9}, "test": {"ndcg@10": 0.55}}}, "ndcg@10")
    return {
        "dist": plot_score_distributions(dists, out / "dist.png"),
        "margins": plot_margins(margins, out / "margins.png"),
        "evolution": plot_score_evolution(evols, out / "evolution.png"),
        "gap": plot_gap(gaps, out / "sub" / "gap.png", metric="nDCG@10"),
    }


@pytest.mark.parametrize("name", ["dist", "margins", "evolution", "gap"])
def test_plots_write_png(plots, name):
    assert plots[name].name == f"{name}.png"
    assert_png(plots[name])


def test_plots_handle_edge_cases(tmp_path):
    empty = ScoreDistributions(np.empty(0), np.array([0.1, 0.2]))
    assert_png(plot_score_distributions({"a": empty, "b": ScoreDistributions(np.empty(0), np.empty(0))},
                                        tmp_path / "d.png"))
    assert_png(plot_margins({"none": {}, "one": {"q": 0.5}}, tmp_path / "m.png"))
    assert_png(plot_gap({"CA": {"train": 0.5, "test": 0.4}}, tmp_path / "g.png"))  # gap computed
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_margins({}, tmp_path / "x.png")


def test_import_has_no_pyplot_side_effects():
    code = ("import sys, dualist.report, dualist.diagnostics; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- markdown table -------------------------------------------------------------------------

def test_markdown_table_exact():
    rows = [{"model": "CA", "MRR@10": 0.37, "n": 300}, {"model": "DE|x", "MRR@10": 0.3104}]
    assert markdown_table(rows, ["model", "MRR@10", "n"]) == (
        "| model | MRR@10 |   n |\n"
        "|:------|-------:|----:|\n"
        "| CA    |  0.370 | 300 |\n"
        "| DE\\|x |  0.310 |   – |"
    )


def test_markdown_table_bold_best_and_floatfmt():
    rows = [{"m": "a", "x": 0.5, "y": 0.2}, {"m": "b", "x": 0.25, "y": 0.9}]
    assert markdown_table(rows, ["m", "x", "y"], ".2f", bold_best=True) == (
        "| m   |        x |        y |\n"
        "|:----|---------:|---------:|\n"
        "| a   | **0.50** |     0.20 |\n"
        "| b   |     0.25 | **0.90** |"
    )


# --- report ---------------------------------------------------------------------------------

ROWS = [
    {"model": "CA", "re-rank MRR@10": 0.370, "re-rank nDCG@10": 0.430},
    {"model": "DE <script>alert(1)</script>", "re-rank MRR@10": 0.310, "re-rank nDCG@10": 0.360,
     "retrieval nDCG@10": 0.301, "retrieval R@100": 0.712},
    {"model": "DE+M3SE", "re-rank MRR@10": 0.349, "re-rank nDCG@10": 0.406, "retrieval nDCG@10": 0.333,
     "retrieval R@100": 0.745},
]
COLUMNS = ["model", "re-rank MRR@10", "re-rank nDCG@10", "retrieval nDCG@10", "retrieval R@100"]


@pytest.fixture(scope="module")
def report(plots, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(
        out, title="Results & <diagnostics>", table_rows=ROWS, columns=COLUMNS,
        sections=[
            {"title": "Margins", "text": "Higher is better.\n\nSee https://example.org <i>", "image": plots["margins"],
             "table": [{"model": "CA", "median": 0.2}]},
            Section("Gap", image=plots["gap"],
                    table={"rows": [{"model": "CA", "gap": 0.1, "extra": 1}], "columns": ["model", "gap"]}),
            {"title": "Text only", "text": "no image"},
        ],
        settings={"data": {"name": "scifact", "k": 100}, "loss": "<m3se>"},
        timings={"bm25": 1.5, "teacher": 3725.0}, version="9.9.9", notes=["fake <data>"],
        generated=datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
    )
    return paths


def test_report_paths(report):
    assert isinstance(report, ReportPaths)
    assert report.html.name == "index.html" and report.markdown.name == "report.md"
    assert [p.name for p in report.images] == ["margins.png", "gap.png"]
    for p in report.images:
        assert p.parent == report.html.parent
        assert_png(p)


def test_report_html_content(report):
    page = report.html.read_text(encoding="utf-8")
    for value in ("0.370", "0.310", "0.349", "0.430", "0.406", "0.301", "0.712", "0.745"):
        assert value in page
    # best per column is bold, others not
    for best in ("0.370", "0.430", "0.333", "0.745"):
        assert f"<strong>{best}</strong>" in page
    assert "<strong>0.310</strong>" not in page
    assert page.count('<img src="data:image/png;base64,') == 2
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and not any(r.startswith(("http://", "https://", "//")) for r in refs)
    assert "<script" not in page.lower()
    assert "DE &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Results &amp; &lt;diagnostics&gt;" in page
    assert "&lt;m3se&gt;" in page and "fake &lt;data&gt;" in page and "&lt;i&gt;" in page
    assert "data.name" in page and "scifact" in page
    assert "3725.0" in page and "1:02:05" in page and "3726.5" in page  # stage, h:mm:ss, total
    assert "9.9.9" in page and "2024-05-01" in page


def test_report_markdown_content(report):
    md = report.markdown.read_text(encoding="utf-8")
    assert md.startswith("# Results &amp; &lt;diagnostics&gt;\n")
    assert "![Margins](margins.png)" in md and "![Gap](gap.png)" in md
    assert "**0.370**" in md and "| DE &lt;script&gt;alert(1)&lt;/script&gt; |" in md
    assert "## Text only" in md and "9.9.9" in md


def test_report_section_table_forms(report):
    page = report.html.read_text(encoding="utf-8")
    md = report.markdown.read_text(encoding="utf-8")
    assert "<th>model</th><th class=\"num\">median</th>" in page  # list-of-rows form, columns from keys
    assert "<th>model</th><th class=\"num\">gap</th></tr>" in page  # {"rows", "columns"} form
    assert "| CA    | 0.100 |" in md and "extra" not in md


def test_report_timings_total_not_doubled(tmp_path):
    paths = write_report(tmp_path, title="t", table_rows=ROWS, columns=COLUMNS, version="0",
                         timings={"a": 1.0, "b": 2.0, "total": 3.5})
    md = paths.markdown.read_text(encoding="utf-8")
    assert md.count("| total") == 1 and "3.5" in md


def test_report_rejects_bad_sections(tmp_path):
    kw = dict(title="t", table_rows=ROWS, columns=COLUMNS, version="0")
    with pytest.raises(ValueError, match="unknown keys"):
        write_report(tmp_path, sections=[{"title": "x", "img": "a.png"}], **kw)
    with pytest.raises(ValueError, match="needs 'rows'"):
        write_report(tmp_path, sections=[{"title": "x", "table": {"columns": ["a"]}}], **kw)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(tmp_path, sections=[{"title": "x", "image": tmp_path / "missing.png"}], **kw)


def test_report_image_name_collision(plots, tmp_path):
    other = tmp_path / "elsewhere" / "margins.png"
    other.parent.mkdir()
    other.write_bytes(plots["dist"].read_bytes())
    paths = write_report(tmp_path / "out", title="t", table_rows=ROWS, columns=COLUMNS, version="0",
                         sections=[{"title": "a", "image": plots["margins"]}, {"title": "b", "image": other}])
    assert [p.name for p in paths.images] == ["margins.png", "margins-2.png"]
    assert paths.images[1].read_bytes() == plots["dist"].read_bytes()


def test_best_cells_leave_spread_columns_alone():
    from dualist.report.tables import best_cells

    rows = [{"m": "a", "ndcg": 0.40, "ndcg std": 0.020}, {"m": "b", "ndcg": 0.45, "ndcg std": 0.001}]
    assert best_cells(rows, ["m", "ndcg", "ndcg std"]) == {(1, "ndcg")}


def test_summary_hubness_counts_read_as_counts():
    # a document count is a whole number: one seed prints "1915", not "1915.000"; several seeds
    # print their mean rounded to a whole count; and no hubness column is bolded as "best"
    from dualist.report.summary import HUBNESS_COLUMNS, ModelResults, summarize

    def ev(distinct, top):
        return {"hubness_test": {"distinct": distinct, "max_occurrence": top, "skewness": 1.5}}

    one = summarize([ModelResults("zeroshot", "dual_encoder", (ev(1915, 13),)),
                     ModelResults("bm25", "bm25", (ev(662, 131),))], seeds=1)
    rows = {r["id"]: r for r in one.rows()}
    assert rows["zeroshot"]["top-10 distinct docs"] == 1915 and isinstance(rows["zeroshot"]["top-10 distinct docs"], int)
    table = markdown_table(one.rows(), ["model", *HUBNESS_COLUMNS], bold_best=True)
    assert "| 1915 |" in table.replace("  ", " ") or " 1915 " in table
    assert "1915.000" not in table and "**" not in table
    three = summarize([ModelResults("zeroshot", "dual_encoder", (ev(600, 100), ev(601, 120), ev(601, 131)))], seeds=3)
    row = three.rows()[0]
    assert row["top-10 distinct docs"] == 601 and row["top-10 max occurrence"] == 117
    assert all(isinstance(row[c], int) for c in HUBNESS_COLUMNS)


def _evaluation(rerank, retrieval=None, distinct=None):
    """One seed's evaluation: per-query re-rank (and retrieval) nDCG@10, hubness of the retrieval run."""
    def section(values):
        return {"num_queries": len(values), "mean": {"ndcg@10": float(np.mean(values)), "mrr@10": 0.0,
                                                     "recall@100": 0.5},
                "per_query": {"ndcg@10": {f"q{i}": v for i, v in enumerate(values)}}}
    e = {"rerank_test": section(rerank), "rerank_dev": section(rerank)}
    if retrieval is not None:
        e["retrieval_test"] = section(retrieval)
        e["hubness_test"] = {"distinct": distinct, "max_occurrence": 3, "skewness": 1.0}
    return e


def test_recipe_targets_met_and_missed_on_hand_made_figures():
    from dualist.report.summary import ModelResults, summarize

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    lower = np.clip(base - 0.1, 0, 1)  # every query 0.1 worse: far below, p ~ 0
    higher = np.clip(base + 0.05, 0, 1)

    def de(name, rerank, retrieval, distinct):
        return ModelResults(name, "dual_encoder", (_evaluation(rerank, retrieval, distinct),))

    models = [ModelResults("bm25", "bm25", (_evaluation(base, base, 500),)),
              de("zeroshot", base, base, 1000),
              ModelResults("teacher", "cross_encoder", (_evaluation(higher),)),
              de("onehot", base, base, 900),
              de("kl", higher, base, 850),  # beats one-hot, keeps 85% of the start's distinct documents
              de("m3se", base, lower, 700)]  # below its start in retrieval, hubs: 70%
    summary = summarize(models, seeds=1)
    targets = {t.id: t for t in summary.targets}
    below = targets["never_below_start"]
    assert not below.supported
    assert [(r["model"], r["metric"]) for r in below.figures["below"]] == [("m3se", "retrieval.ndcg@10")]
    assert "DE + M3SE retrieval nDCG@10 -0.100" in below.text and below.text.startswith("NOT MET")
    assert targets["teacher_gap"].supported and targets["teacher_gap"].figures["gap"] == pytest.approx(
        float(np.mean(higher) - np.mean(base)))
    beats = targets["distilled_beats_onehot"]
    assert beats.supported and beats.figures["model"] == "kl" and beats.figures["p_value"] < 0.05
    hub = targets["hubness_kept"]
    assert not hub.supported and hub.figures["model"] == "m3se" and hub.figures["share"] == pytest.approx(0.7)
    # the teacher is checked on re-rank only (it has no retrieval run); the one-hot DE on both
    checked = {(r["model"], r["metric"]) for r in summary.versus_start}
    assert ("teacher", "rerank.ndcg@10") in checked and ("teacher", "retrieval.ndcg@10") not in checked
    assert ("onehot", "retrieval.ndcg@10") in checked and ("bm25", "rerank.ndcg@10") not in checked

    # all met: no model below its start, and the hubness share at the 80% line counts as kept
    models[5] = de("m3se", base, base, 800)
    met = {t.id: t for t in summarize(models, seeds=1).targets}
    assert met["never_below_start"].supported and met["hubness_kept"].supported
    assert met["never_below_start"].text.startswith("MET: no trained model")
    # a teacher 0.01 above the one-hot DE misses the 0.02 gap
    models[2] = ModelResults("teacher", "cross_encoder", (_evaluation(np.clip(base + 0.01, 0, 1)),))
    assert not {t.id: t for t in summarize(models, seeds=1).targets}["teacher_gap"].supported
