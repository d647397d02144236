"""TREC runs and qrels: formats, ordering, round trips and errors."""

from __future__ import annotations

import pytest

from dualist.data import rank_docs, read_qrels, read_trec_run, write_qrels, write_trec_run
from dualist.errors import DataError

RUN = {"q2": {"a": 0.5, "b": 2.0, "c": 0.5, "10": 0.5, "9": 0.5},
       "q1": {"x": 1e-7, "y": 123.456789012345}}


def test_rank_docs_trec_eval_order():
    # score descending, ties by doc id descending as plain strings: "c" > "a" > "9" > "10"
    assert [d for d, _ in rank_docs(RUN["q2"])] == ["b", "c", "a", "9", "10"]
    assert rank_docs({}) == []


def test_write_trec_run_format(tmp_path):
    p = tmp_path / "sub" / "run.trec"
    write_trec_run(RUN, p, tag="bm25")
    lines = p.read_text().splitlines()
    assert lines[:5] == ["q2 Q0 b 1 2.0 bm25", "q2 Q0 c 2 0.5 bm25", "q2 Q0 a 3 0.5 bm25",
                         "q2 Q0 9 4 0.5 bm25", "q2 Q0 10 5 0.5 bm25"]
    assert lines[5:] == ["q1 Q0 y 1 123.456789012345 bm25", "q1 Q0 x 2 1e-07 bm25"]
    assert not list(p.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_run_round_trip_is_exact(tmp_path):
    p = tmp_path / "run.trec"
    write_trec_run(RUN, p)
    back = read_trec_run(p)
    assert back == RUN  # same floats, bit for bit
    assert list(back["q2"]) == ["b", "c", "a", "9", "10"]  # file (rank) order


def test_max_rank(tmp_path):
    p = tmp_path / "run.trec"
    write_trec_run(RUN, p, max_rank=2)
    assert read_trec_run(p) == {"q2": {"b": 2.0, "c": 0.5}, "q1": {"y": 123.456789012345, "x": 1e-7}}
    with pytest.raises(ValueError):
        write_trec_run(RUN, p, max_rank=0)


def test_numpy_scores_are_written(tmp_path):
    import numpy as np

    p = tmp_path / "run.trec"
    write_trec_run({"q": {"d": np.float32(0.25)}}, p)
    assert read_trec_run(p) == {"q": {"d": 0.25}}


@pytest.mark.parametrize("run, tag, message", [
    ({"q 1": {"d": 1.0}}, "t", "query id 'q 1'"),
    ({"q1": {"d\t1": 1.0}}, "t", "document id"),
    ({"q1": {"d": 1.0}}, "my tag", "run tag"),
    ({"q1": {"d": float("nan")}}, "t", "NaN"),
])
def test_write_run_rejects_unwritable_values(tmp_path, run, tag, message):
    p = tmp_path / "run.trec"
    with pytest.raises(DataError, match=message):
        write_trec_run(run, p, tag=tag)
    assert not p.exists()


@pytest.mark.parametrize("line, message", [
    ("q1 Q0 d2 2 0.5", "expected 6 whitespace-separated columns, found 5"),
    ("q1 Q0 d2 2 0.5 tag extra", "found 7"),
    ("q1 Q0 d2 2 high tag", "score 'high' is not a number"),
    ("q1 Q0 d2 2 nan tag", "score 'nan' is not a number"),
    ("q1 Q0 d1 2 0.5 tag", "document 'd1' appears twice for query 'q1'"),
])
def test_read_run_errors_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "bad.trec"
    p.write_text(f"q1 Q0 d1 1 1.0 tag\n\n{line}\n")
    with pytest.raises(DataError, match=message) as e:
        read_trec_run(p)
    assert e.value.path == str(p) and e.value.line == 3
    assert "bad.trec:3:" in str(e.value)


def test_read_missing_file(tmp_path):
    with pytest.raises(DataError, match="run file not found"):
        read_trec_run(tmp_path / "nope.trec")
    with pytest.raises(DataError, match="qrels file not found"):
        read_qrels(tmp_path)  # a directory


def test_read_run_tab_separated_ok(tmp_path):
    p = tmp_path / "run.trec"
    p.write_text("q1\tQ0\td1\t1\t3\tx\n")
    assert read_trec_run(p) == {"q1": {"d1": 3.0}}


# --------------------------------------------------------------------------- qrels
QRELS = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


def test_read_trec_qrels(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq1 0 d2 0\nq2 Q0 d3 2\n")
    assert read_qrels(p) == QRELS


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore\n", ""])
def test_read_beir_qrels(tmp_path, header):
    p = tmp_path / "test.tsv"
    p.write_text(header + "q1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    assert read_qrels(p) == QRELS


@pytest.mark.parametrize("fmt", ["trec", "beir"])
def test_qrels_round_trip(tmp_path, fmt):
    p = tmp_path / f"qrels.{fmt}"
    write_qrels(QRELS, p, format=fmt)
    assert read_qrels(p) == QRELS
    first = p.read_text().splitlines()[0]
    assert first == ("q1 0 d1 1" if fmt == "trec" else "query-id\tcorpus-id\tscore")


def test_beir_qrels_file_rewrites_byte_identical(tiny_beir, tmp_path):
    src = tiny_beir / "qrels" / "test.tsv"
    write_qrels(read_qrels(src), tmp_path / "test.tsv", format="beir")
    assert (tmp_path / "test.tsv").read_bytes() == src.read_bytes()


def test_write_qrels_bad_format(tmp_path):
    with pytest.raises(ValueError, match="'trec' or 'beir'"):
        write_qrels(QRELS, tmp_path / "x", format="csv")


@pytest.mark.parametrize("text, line, message", [
    ("q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 columns, found 3"),
    ("q1\td1\t1\nq1\t0\td2\t1\n", 2, "expected 3 columns, found 4"),
    ("q1 0 d1 yes\n", 1, "relevance 'yes' is not an integer"),
    ("q1\td1\t0.5\n", 1, "relevance '0.5' is not an integer"),
    ("q1 d1\n", 1, "expected 3 \\(BEIR\\) or 4 \\(TREC\\) columns, found 2"),
])
def test_read_qrels_errors(tmp_path, text, line, message):
    p = tmp_path / "qrels.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_qrels(p)
    assert e.value.path == str(p) and e.value.line == line and e.value.hint


def test_read_qrels_non_utf8(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_bytes(b"q1 0 d1 1\nq\xff 0 d1 1\n")
    with pytest.raises(DataError, match="invalid UTF-8 byte 0xff at byte 2") as e:
        read_qrels(p)
    assert e.value.line == 2


def test_repeated_judgement_keeps_last(tmp_path, caplog):
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq1 0 d1 2\n")
    assert read_qrels(p) == {"q1": {"d1": 2}}
    assert "judged more than once" in caplog.text
