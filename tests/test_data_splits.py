"""carve_dev: a fixed, seeded dev slice of train."""

from __future__ import annotations

import random

import pytest

from dualist.data import carve_dev, load_beir, stable_sample

QRELS = {f"q{i:03d}": {f"d{i}": 1, f"e{i}": 0} for i in range(50)}


def test_partition_and_sizes():
    train, dev = carve_dev(QRELS, fraction=0.1)
    assert len(dev) == 5 and len(train) == 45
    assert set(train).isdisjoint(dev) and set(train) | set(dev) == set(QRELS)
    assert all(dev[q] == QRELS[q] for q in dev)  # judgements carried over intact
    assert list(train) == [q for q in QRELS if q in train]  # input order kept
    assert len(carve_dev(QRELS, n=7)[1]) == 7
    assert len(carve_dev(QRELS, fraction=0.001)[1]) == 1  # at least one


def test_fixed_golden_selection():
    # Pinned: the same seed must pick the same queries on every Python version and machine.
    assert sorted(carve_dev(QRELS, n=5, seed=13)[1]) == ["q009", "q016", "q018", "q035", "q042"]


def test_deterministic_and_order_independent():
    _, a = carve_dev(QRELS, fraction=0.2, seed=13)
    _, b = carve_dev(dict(reversed(list(QRELS.items()))), fraction=0.2, seed=13)
    assert sorted(a) == sorted(b)
    _, c = carve_dev(QRELS, fraction=0.2, seed=14)
    assert sorted(a) != sorted(c)


def test_input_not_modified():
    before = {q: dict(d) for q, d in QRELS.items()}
    train, _ = carve_dev(QRELS, n=3)
    train[next(iter(train))]["new"] = 1
    assert QRELS == before


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"fraction": 1.0}, {"fraction": None},
                                    {"n": 0}, {"n": 50}, {"n": -1}])
def test_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        carve_dev(QRELS, **kwargs)


def test_too_few_queries():
    with pytest.raises(ValueError, match="at least 2"):
        carve_dev({"q1": {"d1": 1}}, fraction=0.5)


def test_stable_sample():
    items = list("abcdefgh")
    picked = stable_sample(random.Random(3), items, 3)
    assert len(picked) == 3 and picked == sorted(picked, key=items.index)  # original order
    assert picked == stable_sample(random.Random(3), items, 3)
    assert stable_sample(random.Random(3), items, 20) == items
    assert stable_sample(random.Random(3), items, 0) == []


def test_carve_tiny_train(tiny_beir):
    ds = load_beir(tiny_beir)
    train, dev = carve_dev(ds.qrels_for("train"), fraction=0.25, seed=13)
    ds2 = ds.with_split("train", train).with_split("dev", dev)
    assert len(ds2.queries_for("dev")) == 8 and len(ds2.queries_for("train")) == 24
