"""Corpus sentences as unjudged training queries (``dualist.data.pseudo``) and the dataset that holds them."""

from __future__ import annotations

import pytest

from dualist.data import load_beir
from dualist.data.pseudo import sentence_queries, sentences
from dualist.errors import ConfigError
from dualist.stages import dataset_fingerprint, with_queries

CORPUS = {
    "a": {"title": "Title words that never count here at all", "text": "Too short. "
          "The first long sentence has exactly eight words. And the second long sentence has nine words here."},
    "b": {"title": "B", "text": "Only a tiny bit."},
    "c": {"title": "C",
          "text": "Mice lacking the receptor (n = 12) lived longer than controls! Why? Nobody knows yet."},
    "d": {"title": "D", "text": "E. coli strains grew at 37 degrees in every one of the media tested."},
}


def test_sentences_cut_at_end_marks_before_a_capital_digit_or_bracket():
    assert sentences("One here. 2 mice died! (Not cut) ok? e.g. no cut here. ") == [
        "One here.", "2 mice died!", "(Not cut) ok? e.g. no cut here."]
    assert sentences("") == []


def test_each_query_is_a_sentence_of_its_document_text_judged_relevant_to_it_alone():
    queries, qrels = sentence_queries(CORPUS, 10, seed=13, min_words=6, max_words=14)
    assert set(queries) == set(qrels)
    assert {next(iter(docs)) for docs in qrels.values()} == {"a", "c", "d"}  # b has no sentence of 6-14 words
    for qid, text in queries.items():
        (did, grade), = qrels[qid].items()
        assert grade == 1 and qid.startswith(f"pseudo-{did}-")
        index = int(qid.rsplit("-", 1)[1])
        assert sentences(CORPUS[did]["text"])[index] == text and 6 <= len(text.split()) <= 14
        assert text not in CORPUS[did]["title"]
    # "E. coli ..." is not cut after its initial, so d's one sentence is the whole text
    assert "E. coli strains grew at 37 degrees in every one of the media tested." in queries.values()


def test_the_sample_depends_on_the_seed_only_not_on_the_corpus_order():
    q13, _ = sentence_queries(CORPUS, 2, seed=13, min_words=6)
    again, _ = sentence_queries(dict(reversed(CORPUS.items())), 2, seed=13, min_words=6)
    assert q13 == again and len(q13) == 2
    picks = {tuple(sorted(sentence_queries(CORPUS, 2, seed=s, min_words=6)[0])) for s in range(20)}
    assert len(picks) > 1  # other seeds draw other documents or sentences


def test_grade_count_and_bounds():
    _, qrels = sentence_queries(CORPUS, 1, seed=3, min_words=6, grade=2)
    assert len(qrels) == 1 and list(next(iter(qrels.values())).values()) == [2]
    assert sentence_queries(CORPUS, 0) == ({}, {})
    with pytest.raises(ValueError, match="grade"):
        sentence_queries(CORPUS, 1, grade=0)
    with pytest.raises(ValueError, match="min_words"):
        sentence_queries(CORPUS, 1, min_words=9, max_words=3)


def test_with_queries_adds_them_to_the_splits_in_a_copy_with_its_own_fingerprint(tiny_beir):
    ds = load_beir(tiny_beir)
    before = dataset_fingerprint(ds, "train")
    queries, qrels = sentence_queries(ds.corpus, 5, seed=13)
    aug = with_queries(ds, ("train", "pseudo"), queries, qrels)
    assert set(aug.queries_for("pseudo")) == set(queries)
    assert set(aug.queries_for("train")) == set(ds.queries_for("train")) | set(queries)
    assert aug.qrels_for("test") == ds.qrels_for("test") and aug.corpus is ds.corpus
    assert "pseudo" not in ds.splits and not set(queries) & set(ds.queries)  # the original is untouched
    assert dataset_fingerprint(ds, "train") == before != dataset_fingerprint(aug, "train")
    assert dataset_fingerprint(aug, "test") != dataset_fingerprint(ds, "test")  # the texts count
    other, other_qrels = sentence_queries(ds.corpus, 5, seed=14)
    assert dataset_fingerprint(with_queries(ds, ("pseudo",), other, other_qrels)) != dataset_fingerprint(aug)
    with pytest.raises(ConfigError, match="already name queries"):
        with_queries(ds, ("train",), {next(iter(ds.queries)): "x"}, {next(iter(ds.queries)): {"d000": 1}})
    with pytest.raises(ConfigError, match="needs judgements"):
        with_queries(ds, ("train",), {"new": "x"}, {})
