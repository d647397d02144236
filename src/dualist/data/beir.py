"""Load (and, given a name, fetch) BEIR datasets, validating them with errors that say where and why.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score``, header line
optional). :func:`load_beir` accepts such a folder or a dataset name (``"scifact"``), which it looks up
in the cache and downloads from the official BEIR location when absent.

>>> import tempfile, pathlib
>>> from dualist.testing import make_tiny_beir
>>> ds = load_beir(make_tiny_beir(pathlib.Path(tempfile.mkdtemp()) / "tiny"))
>>> ds
Dataset(name='tiny', docs=48, queries=48, splits={'dev': 8, 'test': 8, 'train': 32})
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dualist._io import progress
from dualist.data._lines import iter_lines
from dualist.data.dataset import Dataset, DataWarning
from dualist.data.trec import iter_qrels
from dualist.errors import DataError

__all__ = ["load_beir", "default_cache_dir", "BEIR_URL"]

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EXAMPLES = 5  # ids quoted in a warning
_DOWNLOAD_TIMEOUT_S = 60
_LAYOUT_HINT = ("a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv; "
                "pass its path, or a dataset name such as 'scifact' to download it")


def default_cache_dir() -> Path:
    """Where named datasets live: ``$DUALIST_CACHE`` if set, else ``~/.cache/dualist/datasets``."""
    env = os.environ.get("DUALIST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dualist" / "datasets"


# --------------------------------------------------------------------------- public entry point
def load_beir(path_or_name: str | os.PathLike[str], *, splits: str | Iterable[str] | None = None,
              strict: bool = False, cache_dir: str | os.PathLike[str] | None = None,
              download: bool = True) -> Dataset:
    """Load a BEIR dataset from a folder, or by name from the cache (downloading it if needed).

    Args:
        path_or_name: a BEIR folder, or a plain dataset name (``"scifact"``, ``"nfcorpus"``...).
        splits: the qrels splits to load (default: every ``qrels/*.tsv``); a missing one is an error.
        strict: make judgements that point at unknown queries or documents an error instead of a
            warning (by default they are counted, reported and dropped).
        cache_dir: where named datasets are kept (default :func:`default_cache_dir`).
        download: fetch a named dataset that is not in the cache from :data:`BEIR_URL`.

    Raises:
        DataError: naming the file, the 1-based line and the problem, with a hint: malformed JSON,
            a missing or duplicate ``_id``, bytes that are not UTF-8, a qrels row with the wrong
            number of columns or a non-integer score, a missing file or split, a failed download.

    Empty documents (no title and no text) are kept and reported with a :class:`DataWarning`.
    """
    t0 = time.perf_counter()
    folder = _resolve(path_or_name, cache_dir=cache_dir, download=download)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    for p in (corpus_path, queries_path):
        if not p.is_file():
            raise DataError(f"{p.name} not found in the dataset folder", path=folder, hint=_LAYOUT_HINT)
    split_files = _split_files(folder, splits)

    corpus = _read_corpus(corpus_path)
    queries = _read_queries(queries_path)
    for path, records in ((corpus_path, corpus), (queries_path, queries)):
        if not records:
            raise DataError("holds no records", path=path,
                            hint="each line is a JSON object with an _id; is it the right file, or was it cut short?")
    qrels = {}
    for name, path in split_files.items():
        qrels[name] = _read_split_qrels(path, queries, corpus, strict=strict)
    ds = Dataset(name=folder.name, path=folder, corpus=corpus, queries=queries, qrels=qrels)
    logger.info("loaded %r from %s in %.2fs: %d docs, %d queries, splits %s", ds.name, folder,
                time.perf_counter() - t0, len(corpus), len(queries),
                {s: len(q) for s, q in sorted(qrels.items())})
    return ds


# --------------------------------------------------------------------------- locating the folder
def _resolve(path_or_name: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None,
             download: bool) -> Path:
    raw = os.fspath(path_or_name)
    path = Path(raw).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError("not a directory", path=path,
                        hint=_LAYOUT_HINT + " (unzip a downloaded archive first)")
    if not _NAME.match(raw):
        raise DataError("dataset folder not found", path=path, hint=_LAYOUT_HINT)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = cache / raw
    if folder.is_dir():
        return folder
    if not download:
        raise DataError(f"dataset {raw!r} is not in the cache {cache} and download=False",
                        hint=f"pass a local BEIR folder, or allow the download from {BEIR_URL.format(name=raw)}")
    return _download(raw, cache)


def _download(name: str, cache: Path) -> Path:
    """Fetch ``BEIR_URL`` for ``name`` into ``cache`` and unzip it; returns the dataset folder."""
    url = BEIR_URL.format(name=name)
    cache.mkdir(parents=True, exist_ok=True)
    fix = (f"pass the path of a local BEIR folder instead of the name, or set DUALIST_CACHE to a "
           f"folder that contains '{name}/' (download {url} and unzip it there on a machine with a network)")
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".zip.part")
    tmp = Path(tmp_name)
    zip_path = cache / f"{name}.zip"
    logger.info("downloading BEIR dataset %r from %s", name, url)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                    headers = getattr(resp, "headers", None) or {}
                    length = headers.get("Content-Length")
                    with progress(desc=f"download {name}", total=int(length) if length else None,
                                  unit="B", unit_scale=True) as bar:
                        while chunk := resp.read(1 << 20):
                            fh.write(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    raise DataError(f"no BEIR dataset named {name!r}: {url} answered HTTP 404",
                                    hint="check the spelling (e.g. 'scifact', 'nfcorpus', 'fiqa'), "
                                         "or pass a local BEIR folder") from None
                raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}", hint=fix) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"download of dataset {name!r} from {url} failed ({reason}); "
                                "is this machine offline?", hint=fix) from None
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        return _extract(zip_path, cache, name)
    finally:
        zip_path.unlink(missing_ok=True)


def _extract(zip_path: Path, cache: Path, name: str) -> Path:
    target = cache / name
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}.unzip."))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                root = staging.resolve()
                for member in zf.namelist():
                    dest = (staging / member).resolve()
                    if dest != root and root not in dest.parents:
                        raise DataError(f"archive member {member!r} would unzip outside the cache",
                                        path=zip_path, hint="the archive is not a BEIR dataset; do not use it")
                zf.extractall(staging)
        except zipfile.BadZipFile as e:
            raise DataError(f"downloaded file is not a valid zip archive ({e})", path=zip_path,
                            hint="retry the download; if it keeps failing, download and unzip it by hand") from None
        if (staging / name / "corpus.jsonl").exists():
            src = staging / name
        elif (staging / "corpus.jsonl").exists():
            src = staging
        else:
            raise DataError(f"the archive for {name!r} has no corpus.jsonl at its top or in {name}/",
                            path=zip_path, hint=_LAYOUT_HINT)
        if not target.exists():  # another process may have finished first; then keep theirs
            os.replace(src, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("unzipped %r into %s", name, target)
    return target


def _split_files(folder: Path, splits: str | Iterable[str] | None) -> dict[str, Path]:
    qdir = folder / "qrels"
    available = {p.stem: p for p in sorted(qdir.glob("*.tsv"))} if qdir.is_dir() else {}
    if splits is None:
        if not available:
            warnings.warn(f"{folder}: no qrels/<split>.tsv files; the dataset has no judgements",
                          DataWarning, stacklevel=3)
        return available
    wanted = [splits] if isinstance(splits, str) else list(splits)
    missing = [s for s in wanted if s not in available]
    if missing:
        raise DataError(f"split(s) {', '.join(map(repr, missing))} not found; available: "
                        f"{', '.join(available) or '(none)'}", path=qdir,
                        hint="SciFact has no dev split: carve one from train with --dev-fraction 0.1 "
                             "(dualist.data.carve_dev)"
                        if "dev" in missing else "each split is a file qrels/<split>.tsv")
    return {s: available[s] for s in wanted}


# --------------------------------------------------------------------------- readers
def _json_object(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON at column {e.colno}: {e.msg}", path=path, line=lineno,
                        hint='each line must be one JSON object, e.g. {"_id": "d1", "title": "", "text": "..."}'
                        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, found {type(obj).__name__}", path=path, line=lineno,
                        hint='each line must be one JSON object with an "_id"')
    return obj


def _id_of(obj: dict[str, Any], path: Path, lineno: int) -> str:
    did = obj.get("_id")
    if isinstance(did, int) and not isinstance(did, bool):
        did = str(did)
    if not isinstance(did, str) or not did:
        problem = 'missing "_id"' if "_id" not in obj else f'"_id" must be a non-empty string, got {did!r}'
        raise DataError(problem, path=path, line=lineno,
                        hint='every line needs an id, e.g. {"_id": "d1", ...}')
    return did


def _field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _duplicate(path: Path, did: str, lineno: int) -> DataError:
    first = next((n for n, line in iter_lines(path) if _id_of(_json_object(line, path, n), path, n) == did),
                 None)
    return DataError(f"duplicate _id {did!r} (first defined at line {first})", path=path, line=lineno,
                     hint="ids must be unique; remove or rename one of the entries")


def _read_corpus(path: Path) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    empty: list[str] = []
    for lineno, line in iter_lines(path):
        obj = _json_object(line, path, lineno)
        did = _id_of(obj, path, lineno)
        if did in corpus:
            raise _duplicate(path, did, lineno)
        title, text = _field(obj, "title"), _field(obj, "text")
        if not (title.strip() or text.strip()):
            empty.append(did)
        corpus[did] = {"title": title, "text": text}
    if empty:
        warnings.warn(f"{path}: {len(empty)} empty document(s) (no title and no text), kept: "
                      f"{_examples(empty)}", DataWarning, stacklevel=3)
    return corpus


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    empty: list[str] = []
    for lineno, line in iter_lines(path):
        obj = _json_object(line, path, lineno)
        qid = _id_of(obj, path, lineno)
        if qid in queries:
            raise _duplicate(path, qid, lineno)
        text = _field(obj, "text")
        if not text.strip():
            empty.append(qid)
        queries[qid] = text
    if empty:
        warnings.warn(f"{path}: {len(empty)} empty quer(y/ies), kept: {_examples(empty)}",
                      DataWarning, stacklevel=3)
    return queries


def _read_split_qrels(path: Path, queries: dict[str, str], corpus: dict[str, dict[str, str]], *,
                      strict: bool) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    bad_q: list[str] = []
    bad_d: list[str] = []
    dups = 0
    for lineno, qid, did, rel in iter_qrels(path, "beir"):
        unknown = ("query" if qid not in queries else None) or ("document" if did not in corpus else None)
        if unknown:
            if strict:
                value = qid if unknown == "query" else did
                raise DataError(f"judgement for unknown {unknown} id {value!r}", path=path, line=lineno,
                                hint=f"it is not in {'queries' if unknown == 'query' else 'corpus'}.jsonl; "
                                     "fix the ids, or drop such rows by loading without --strict "
                                     "(--no-strict, strict=False)")
            (bad_q if unknown == "query" else bad_d).append(qid if unknown == "query" else did)
            continue
        docs = qrels.setdefault(qid, {})
        dups += did in docs
        docs[did] = rel
    if bad_q or bad_d:
        parts = []
        if bad_q:
            parts.append(f"{len(bad_q)} with unknown query ids ({_examples(bad_q)})")
        if bad_d:
            parts.append(f"{len(bad_d)} with unknown document ids ({_examples(bad_d)})")
        warnings.warn(f"{path}: dropped {len(bad_q) + len(bad_d)} judgement row(s): " + "; ".join(parts),
                      DataWarning, stacklevel=3)
    if dups:
        warnings.warn(f"{path}: {dups} (query, document) pair(s) judged more than once; kept the last grade",
                      DataWarning, stacklevel=3)
    return qrels


def _examples(ids: list[str]) -> str:
    """The first few distinct ids, quoted, e.g. ``'d1', 'd7', ... (+3 more)``."""
    distinct = list(dict.fromkeys(ids))
    shown = ", ".join(repr(i) for i in distinct[:_EXAMPLES])
    more = len(distinct) - _EXAMPLES
    return shown + (f", ... (+{more} more)" if more > 0 else "")
