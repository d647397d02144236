"""Dataset: the in-memory BEIR container."""

from __future__ import annotations

import pytest

from dualist.data import Dataset, doc_text, load_beir
from dualist.errors import DataError


@pytest.fixture()
def ds() -> Dataset:
    return Dataset(
        name="toy", path=None,
        corpus={"d2": {"title": "Second", "text": "two"}, "d1": {"title": "", "text": " one "},
                "d3": {"title": "Title only", "text": ""}},
        queries={"q3": "three", "q1": "one", "q2": "two", "q9": "unjudged"},
        qrels={"test": {"q3": {"d2": 1}, "q1": {"d1": 2, "d3": 0}}, "train": {"q2": {"d2": 1}}},
    )


def test_splits_sorted_and_doc_ids_in_corpus_order(ds):
    assert ds.splits == ["test", "train"]
    assert ds.doc_ids == ["d2", "d1", "d3"]


def test_qrels_for_missing_split_names_the_existing_ones(ds):
    assert ds.qrels_for("train") == {"q2": {"d2": 1}}
    with pytest.raises(DataError, match="no split 'dev'.*test, train") as e:
        ds.qrels_for("dev")
    assert "carve_dev" in str(e.value)  # the SciFact hint


def test_queries_for_only_judged_queries_sorted(ds):
    assert list(ds.queries_for("test").items()) == [("q1", "one"), ("q3", "three")]


def test_queries_for_skips_judged_queries_without_text(ds):
    ds.qrels["test"]["q404"] = {"d1": 1}
    assert list(ds.queries_for("test")) == ["q1", "q3"]


def test_doc_text_joins_title_and_text():
    assert doc_text({"title": "T", "text": "body"}) == "T body"
    assert doc_text({"title": "", "text": " body "}) == "body"
    assert doc_text({"title": "T", "text": ""}) == "T"
    assert doc_text({"text": "no title key"}) == "no title key"
    assert doc_text({"title": "", "text": ""}) == ""


def test_dataset_doc_text(ds):
    assert ds.doc_text("d2") == "Second two"
    assert ds.doc_text("d1") == "one"
    assert ds.doc_text("d3") == "Title only"


def test_with_split_is_a_copy_sharing_the_corpus(ds):
    new = ds.with_split("dev", {"q9": {"d1": 1}})
    assert new.splits == ["dev", "test", "train"]
    assert ds.splits == ["test", "train"]  # original untouched
    assert new.corpus is ds.corpus and new.queries is ds.queries
    assert new.queries_for("dev") == {"q9": "unjudged"}
    replaced = new.with_split("train", {"q3": {"d2": 1}})
    assert replaced.qrels_for("train") == {"q3": {"d2": 1}}
    assert new.qrels_for("train") == {"q2": {"d2": 1}}


def test_repr_is_short(ds):
    r = repr(ds)
    assert r == "Dataset(name='toy', docs=3, queries=4, splits={'test': 2, 'train': 1})"


def test_loaded_tiny_dataset(tiny_beir):
    ds = load_beir(tiny_beir)
    assert ds.name == "tiny" and ds.path == tiny_beir
    assert len(ds.corpus) == 48 and len(ds.queries) == 48
    assert ds.splits == ["dev", "test", "train"]
    assert sum(len(v) for v in ds.qrels_for("train").values()) == 64
    assert ds.doc_ids[:2] == ["d000", "d001"]
