"""load_beir: reading, validation errors and warnings, name lookup and (mocked) download."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from dualist.data import DataWarning, load_beir
from dualist.errors import DataError


def write_beir(root: Path, corpus=None, queries=None, qrels=None) -> Path:
    """A small BEIR folder; ``corpus``/``queries`` are lists of lines (str) or dicts, ``qrels`` split -> text."""
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Cats", "text": "Cats purr."},
        {"_id": "d2", "title": "Dogs", "text": "Dogs bark."},
        {"_id": "d3", "title": "", "text": "Birds sing."},
    ]
    queries = queries if queries is not None else [{"_id": "q1", "text": "cats"}, {"_id": "q2", "text": "dogs"}]
    qrels = qrels if qrels is not None else {"test": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"}
    (root / "qrels").mkdir(parents=True, exist_ok=True)

    def lines(items):
        return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items)

    (root / "corpus.jsonl").write_text(lines(corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(lines(queries), encoding="utf-8")
    for split, text in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return root


# --------------------------------------------------------------------------- happy paths
def test_loads_small_folder(tmp_path):
    ds = load_beir(write_beir(tmp_path / "small"))
    assert ds.name == "small"
    assert ds.corpus["d1"] == {"title": "Cats", "text": "Cats purr."}
    assert ds.corpus["d3"]["title"] == ""
    assert ds.queries == {"q1": "cats", "q2": "dogs"}
    assert ds.qrels == {"test": {"q1": {"d1": 1}, "q2": {"d2": 2}}}


def test_header_is_optional_and_crlf_and_bom_are_fine(tmp_path):
    root = write_beir(tmp_path / "b", qrels={"test": "q1\td1\t1\r\nq2\td2\t2\r\n\n"})
    (root / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + (root / "corpus.jsonl").read_bytes().replace(b"\n", b"\r\n"))
    ds = load_beir(root)
    assert ds.qrels == {"test": {"q1": {"d1": 1}, "q2": {"d2": 2}}}
    assert list(ds.corpus) == ["d1", "d2", "d3"]


def test_integer_ids_become_strings_and_null_fields_empty(tmp_path):
    root = write_beir(tmp_path / "b", corpus=[{"_id": 7, "title": None, "text": "x"}],
                      queries=[{"_id": 1, "text": "x"}], qrels={"test": "1\t7\t1\n"})
    ds = load_beir(root)
    assert ds.corpus == {"7": {"title": "", "text": "x"}}
    assert ds.qrels_for("test") == {"1": {"7": 1}}


def test_select_splits(tiny_beir):
    ds = load_beir(tiny_beir, splits=["test"])
    assert ds.splits == ["test"]
    assert load_beir(tiny_beir, splits="dev").splits == ["dev"]


def test_missing_split_lists_available(tiny_beir):
    with pytest.raises(DataError, match=r"'validation' not found; available: dev, test, train"):
        load_beir(tiny_beir, splits=["test", "validation"])


def test_missing_dev_split_hints_carving(tmp_path):
    with pytest.raises(DataError, match="available: test") as e:
        load_beir(write_beir(tmp_path / "b"), splits=["dev"])
    assert "carve_dev" in str(e.value)


def test_real_scifact_shape_and_speed(shared_data):
    import time

    t0 = time.perf_counter()
    ds = load_beir(shared_data / "scifact")
    elapsed = time.perf_counter() - t0
    assert (len(ds.corpus), len(ds.qrels_for("train")), len(ds.qrels_for("test"))) == (5183, 809, 300)
    assert ds.splits == ["test", "train"]
    assert sum(len(d) for d in ds.qrels_for("test").values()) == 339
    assert elapsed < 1.0, f"loading SciFact took {elapsed:.2f}s"


# --------------------------------------------------------------------------- errors: JSON files
@pytest.mark.parametrize("bad_line, message", [
    ('{"_id": "d9", "text": "unterminated', "malformed JSON"),
    ('["d9", "a list"]', "expected a JSON object, found list"),
    ('{"title": "no id", "text": "x"}', 'missing "_id"'),
    ('{"_id": "", "text": "x"}', '"_id" must be a non-empty string'),
    ('{"_id": null, "text": "x"}', '"_id" must be a non-empty string'),
])
def test_corpus_line_errors_name_file_and_line(tmp_path, bad_line, message):
    root = write_beir(tmp_path / "b", corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, bad_line])
    with pytest.raises(DataError, match=message) as e:
        load_beir(root)
    assert e.value.path == str(root / "corpus.jsonl")
    assert e.value.line == 3
    assert e.value.hint
    assert "corpus.jsonl:3:" in str(e.value)


def test_malformed_query_line(tmp_path):
    root = write_beir(tmp_path / "b", queries=[{"_id": "q1", "text": "x"}, "{oops"])
    with pytest.raises(DataError, match="malformed JSON") as e:
        load_beir(root)
    assert e.value.path.endswith("queries.jsonl") and e.value.line == 2


def test_duplicate_doc_id(tmp_path):
    root = write_beir(tmp_path / "b", corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"},
                                               {"_id": "d1", "text": "again"}])
    with pytest.raises(DataError, match=r"duplicate _id 'd1' \(first defined at line 1\)") as e:
        load_beir(root)
    assert e.value.line == 3 and e.value.path.endswith("corpus.jsonl")


def test_duplicate_query_id(tmp_path):
    root = write_beir(tmp_path / "b", queries=[{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"},
                                                {"_id": "q2", "text": "c"}])
    with pytest.raises(DataError, match=r"duplicate _id 'q2' \(first defined at line 2\)") as e:
        load_beir(root)
    assert e.value.line == 3 and e.value.path.endswith("queries.jsonl")


def test_non_utf8_bytes_give_line_and_byte_offset(tmp_path):
    root = write_beir(tmp_path / "b")
    good = (root / "corpus.jsonl").read_bytes()
    (root / "corpus.jsonl").write_bytes(good + b'{"_id": "d4", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"invalid UTF-8 byte 0xe9 at byte 27 of the line") as e:
        load_beir(root)
    assert e.value.line == 4
    assert f"file offset {len(good) + 26}" in str(e.value)
    assert "UTF-8" in e.value.hint and "re-encode" in e.value.hint


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl"])
def test_missing_file(tmp_path, missing):
    root = write_beir(tmp_path / "b")
    (root / missing).unlink()
    with pytest.raises(DataError, match=f"{missing} not found") as e:
        load_beir(root)
    assert "qrels/<split>.tsv" in e.value.hint


# --------------------------------------------------------------------------- errors: qrels
@pytest.mark.parametrize("row, message", [
    ("q2\td2", "expected 3 columns, found 2"),
    ("q2\t0\td2\t1", "expected 3 columns, found 4"),
    ("q2\td2\thigh", "relevance 'high' is not an integer"),
    ("q2\td2\t1.5", "relevance '1.5' is not an integer"),
])
def test_bad_qrels_rows(tmp_path, row, message):
    root = write_beir(tmp_path / "b", qrels={"test": f"query-id\tcorpus-id\tscore\nq1\td1\t1\n{row}\n"})
    with pytest.raises(DataError, match=message) as e:
        load_beir(root)
    assert e.value.path == str(root / "qrels" / "test.tsv")
    assert e.value.line == 3
    assert e.value.hint


def test_non_integer_score_on_first_line_is_not_taken_for_a_header(tmp_path):
    root = write_beir(tmp_path / "b", qrels={"test": "q1\td1\tyes\n"})
    with pytest.raises(DataError, match="not an integer") as e:
        load_beir(root)
    assert e.value.line == 1


def test_unknown_ids_in_qrels_are_reported_and_dropped(tmp_path):
    rows = "q1\td1\t1\nq7\td1\t1\nq8\td2\t1\nq1\td404\t1\nq2\td2\t1\n"
    root = write_beir(tmp_path / "b", qrels={"test": rows})
    with pytest.warns(DataWarning) as rec:
        ds = load_beir(root)
    msg = str(rec[0].message)
    assert "dropped 3 judgement row(s)" in msg
    assert "2 with unknown query ids ('q7', 'q8')" in msg
    assert "1 with unknown document ids ('d404')" in msg
    assert ds.qrels_for("test") == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_unknown_ids_in_qrels_are_errors_when_strict(tmp_path):
    root = write_beir(tmp_path / "b", qrels={"test": "q1\td1\t1\nq1\td404\t1\n"})
    with pytest.raises(DataError, match="unknown document id 'd404'") as e:
        load_beir(root, strict=True)
    assert e.value.line == 2 and "strict=False" in e.value.hint
    root = write_beir(tmp_path / "c", qrels={"test": "q5\td1\t1\n"})
    with pytest.raises(DataError, match="unknown query id 'q5'"):
        load_beir(root, strict=True)


def test_empty_documents_are_kept_with_a_warning(tmp_path):
    corpus = [{"_id": f"e{i}", "title": "", "text": "  "} for i in range(7)] + [{"_id": "d1", "text": "x"}]
    root = write_beir(tmp_path / "b", corpus=corpus, qrels={"test": "q1\td1\t1\n"})
    with pytest.warns(DataWarning, match=r"7 empty document\(s\).*'e0', 'e1', 'e2', 'e3', 'e4', \.\.\. \(\+2 more\)"):
        ds = load_beir(root)
    assert len(ds.corpus) == 8 and ds.doc_text("e3") == ""


def test_clean_data_loads_without_warnings(tiny_beir, recwarn):
    load_beir(tiny_beir)
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


# --------------------------------------------------------------------------- names, cache, download
def test_nonexistent_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found") as e:
        load_beir(tmp_path / "nope" / "scifact")
    assert "corpus.jsonl" in e.value.hint


def test_a_file_is_not_a_dataset(tmp_path):
    f = tmp_path / "scifact.zip"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="not a directory"):
        load_beir(f)


def test_name_found_in_cache_dir(tiny_beir, tmp_path, monkeypatch):
    shutil.copytree(tiny_beir, tmp_path / "cache" / "mini")
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    ds = load_beir("mini", cache_dir=tmp_path / "cache")
    assert ds.name == "mini" and len(ds.corpus) == 48


def test_dualist_cache_env_is_the_default(tiny_beir, tmp_path, monkeypatch):
    shutil.copytree(tiny_beir, tmp_path / "envcache" / "mini")
    monkeypatch.setenv("DUALIST_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert load_beir("mini").path == tmp_path / "envcache" / "mini"


def test_name_not_cached_and_download_disabled(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataError, match="not in the cache.*download=False"):
        load_beir("scifact", cache_dir=tmp_path, download=False)


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used here")


def test_offline_download_fails_with_a_clear_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_beir("scifact", cache_dir=tmp_path)
    text = str(e.value)
    assert "download of dataset 'scifact'" in text and "failed" in text
    assert "name resolution" in text  # why
    assert "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip" in text
    assert "local BEIR folder" in e.value.hint and "DUALIST_CACHE" in e.value.hint  # how to fix
    assert not any(tmp_path.iterdir())  # no half-written leftovers


def test_download_timeout(tmp_path, monkeypatch):
    def slow(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(DataError, match="failed.*timed out"):
        load_beir("scifact", cache_dir=tmp_path)


def test_unknown_dataset_name_404(tmp_path, monkeypatch):
    def not_found(url, *args, **kwargs):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(DataError, match="no BEIR dataset named 'scifcat'"):
        load_beir("scifcat", cache_dir=tmp_path)


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _zip_of(folder: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{name}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


def test_download_unzips_into_cache_and_loads(tiny_beir, tmp_path, monkeypatch):
    payload = _zip_of(tiny_beir, "tinyset")
    calls = []

    def serve(url, *args, **kwargs):
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    cache = tmp_path / "cache"
    ds = load_beir("tinyset", cache_dir=cache)
    assert calls == ["https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/tinyset.zip"]
    ref = load_beir(tiny_beir)
    assert (ds.corpus, ds.queries, ds.qrels) == (ref.corpus, ref.queries, ref.qrels)
    assert ds.path == cache / "tinyset"
    assert sorted(p.name for p in cache.iterdir()) == ["tinyset"]  # zip and temp files cleaned up
    load_beir("tinyset", cache_dir=cache)  # now cached: no second download
    assert len(calls) == 1


def test_download_of_a_broken_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _FakeResponse(b"<html>not a zip</html>"))
    with pytest.raises(DataError, match="not a valid zip"):
        load_beir("broken", cache_dir=tmp_path)
    assert not (tmp_path / "broken").exists()
