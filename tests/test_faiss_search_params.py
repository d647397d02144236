"""Approximate search that comes back short says so, and --nprobe / --ef-search reach FAISS from the CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dualist.cli import main

faiss = pytest.importorskip("faiss")


def _ivf(nprobe=None):
    from dualist.index import FaissIndex

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 16)).astype(np.float32)
    index = FaissIndex("IVF16,Flat", nprobe=nprobe)
    index.add([f"d{i}" for i in range(400)], emb)
    return index, rng.standard_normal((5, 16)).astype(np.float32)


def test_short_results_are_a_warning_that_names_the_knob(caplog):
    index, queries = _ivf()
    with caplog.at_level(logging.WARNING, logger="dualist"):
        res = index.search(queries, k=100)
    assert min(len(ids) for ids in res.ids) < 100  # one IVF list of ~25 vectors cannot fill 100
    assert "returned" in caplog.text and "of the 500 results asked for" in caplog.text and "nprobe" in caplog.text
    caplog.clear()
    index.set_search_params(nprobe=16)  # every list: exhaustive, full results, no warning
    with caplog.at_level(logging.WARNING, logger="dualist"):
        res = index.search(queries, k=100)
    assert all(len(ids) == 100 for ids in res.ids) and "returned" not in caplog.text


def test_set_search_params_checks_the_index_type():
    from dualist.errors import ConfigError

    index, _ = _ivf()
    with pytest.raises(ConfigError, match="ef_search applies to HNSW"):
        index.set_search_params(ef_search=32)


def test_cli_nprobe_and_ef_search(tiny_beir, tiny_bert, tmp_path, caplog, capsys):
    from dualist.data import read_trec_run
    from dualist.models import DualEncoder

    DualEncoder(model=str(tiny_bert), doc_max_length=32).save_pretrained(tmp_path / "de")
    d = ["--data", str(tiny_beir)]
    de = str(tmp_path / "de")
    assert main(["index", *d, "--model", de, "--backend", "faiss", "--factory", "IVF4,Flat",
                 "--out", str(tmp_path / "ivf")]) == 0
    search = ["search", *d, "--model", de, "--index", str(tmp_path / "ivf"), "--k", "40"]
    with caplog.at_level(logging.WARNING, logger="dualist"):
        assert main([*search, "--out", str(tmp_path / "short.trec")]) == 0
    assert "returned" in caplog.text and "--nprobe" in caplog.text
    assert main([*search, "--nprobe", "4", "--out", str(tmp_path / "full.trec")]) == 0
    assert all(len(docs) == 40 for docs in read_trec_run(tmp_path / "full.trec").values())
    # the index's saved default
    assert main(["index", *d, "--model", de, "--backend", "faiss", "--factory", "IVF4,Flat", "--nprobe", "4",
                 "--out", str(tmp_path / "ivf4")]) == 0
    assert main([*search[:-4], "--index", str(tmp_path / "ivf4"), "--k", "40", "--out", str(tmp_path / "d.trec")]) == 0
    assert all(len(docs) == 40 for docs in read_trec_run(tmp_path / "d.trec").values())
    capsys.readouterr()
    # a knob that does not apply is an error, not ignored
    assert main([*search, "--ef-search", "64", "--out", str(tmp_path / "x.trec")]) == 2
    assert "ef_search applies to HNSW" in capsys.readouterr().err
    assert main(["index", *d, "--model", de, "--nprobe", "4", "--out", str(tmp_path / "exact")]) == 2
    assert not (tmp_path / "x.trec").exists() and not (tmp_path / "exact").exists()
