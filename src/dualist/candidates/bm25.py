"""BM25 candidates with bm25s, analysed like Pyserini's default Lucene English analyzer.

The defaults reproduce Pyserini's BEIR "flat" BM25 (k1=0.9, b=0.4, Lucene's BM25 formula; title
and text indexed together as ``"title text"``), and the analyzer follows Lucene's
``EnglishAnalyzer``/Anserini default chain step by step:

1. tokenize like Lucene's ``StandardTokenizer`` (Unicode word boundaries, approximated by a regex:
   runs of word characters, kept together across ``.`` and ``'`` inside a word and across ``,``
   between digits, so ``"3.5"``, ``"u.s"`` and ``"1,000"`` stay one token; single characters are
   tokens too),
2. lower-case, drop a trailing possessive ``'s`` (``EnglishPossessiveFilter``),
3. remove Lucene's 33 English stop words (``stopwords="en"``, the same list bm25s ships),
4. stem (``stemmer="porter"`` is Lucene's ``PorterStemFilter``; ``"english"`` is Snowball's Porter2).

Retrieval uses bm25s's precomputed document-term score matrix; the top-``k`` selection is done here
so that it is exact and deterministic: only documents that share a term with the query are returned
(as with Lucene; a query with no known term gets an empty ranking), ranked by score with ties broken
by document id in trec_eval order (:func:`dualist.data.rank_docs`).

>>> r = BM25Retriever().index({"d1": {"title": "Cats", "text": "Cats purr."},
...                            "d2": {"title": "Dogs", "text": "The dog's bark."}})
>>> run = r.search({"q1": "barking dogs", "q2": "the"}, k=5)
>>> list(run["q1"]), run["q2"]
(['d2'], {})
>>> r.analyze("The U.S.A. dog's 1,000 barks at 3.5 Hz")
['u.s.a', 'dog', '1,000', 'bark', '3.5', 'hz']
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dualist._io import progress, progress_enabled, write_json
from dualist.data.dataset import Dataset, doc_text
from dualist.errors import ConfigError, DataError, MissingDependencyError

__all__ = ["BM25Retriever", "bm25_run", "LUCENE_TOKEN_PATTERN"]

logger = logging.getLogger(__name__)

Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
PARAMS_FILE = "dualist_bm25.json"

# Lucene StandardTokenizer (UAX #29 word boundaries), approximately: '.' and apostrophes join word
# characters ("u.s.a", "don't", "3.5"); ',' and ';' join digits ("1,000").
LUCENE_TOKEN_PATTERN = r"\w+(?:(?:[.'\u2019]|(?<=\d)[,;](?=\d))\w+)*"
_POSSESSIVE = re.compile(r"['\u2019]s$")
_NNZ_BUDGET = 1 << 24  # (query, matching doc) pairs scored at once: bounds memory to ~200 MB


class _Analyzer:
    """text -> list of terms; its settings are plain JSON so an index can be reloaded exactly."""

    def __init__(self, stemmer: str | None, stopwords: str | list[str] | None, lowercase: bool,
                 token_pattern: str):
        _bm25s()  # first import: keep the application's log level
        from bm25s.tokenization import _infer_stopwords

        if stopwords is not None and not isinstance(stopwords, str):
            stopwords = list(stopwords)  # a tuple or set would not survive the JSON round trip
        self.settings = {"stemmer": stemmer, "stopwords": stopwords, "lowercase": lowercase,
                         "token_pattern": token_pattern}
        try:
            self._stop = frozenset(_infer_stopwords(stopwords if stopwords is not None else False))
        except ValueError as e:
            raise ConfigError(f"stopwords: {e}") from None
        self._split = re.compile(token_pattern).findall
        self._lower = lowercase
        self._stem_fn = None
        if stemmer is not None:
            try:
                import Stemmer
            except ImportError:
                raise MissingDependencyError("PyStemmer", "BM25 stemming") from None
            if stemmer not in Stemmer.algorithms():
                raise ConfigError(f"stemmer {stemmer!r} is not one of PyStemmer's algorithms: "
                                  f"{', '.join(Stemmer.algorithms())} (or None for no stemming)")
            self._stem_fn = Stemmer.Stemmer(stemmer).stemWord
        self._cache: dict[str, str | None] = {}  # surface word -> term (None: a stop word)

    def _term(self, word: str) -> str | None:
        base = _POSSESSIVE.sub("", word)
        if not base or base in self._stop:
            term = None
        else:
            term = self._stem_fn(base) if self._stem_fn is not None else base
        self._cache[word] = term
        return term

    def words(self, text: str) -> list[str]:
        """Surface tokens (lower-cased if asked), before possessive removal, stop words and stemming."""
        return self._split(text.lower() if self._lower else text)

    def __call__(self, text: str) -> list[str]:
        cache, term = self._cache, self._term
        terms = [cache[w] if w in cache else term(w) for w in self.words(text)]
        return [t for t in terms if t is not None]

    def ids(self, text: str, vocab: dict[str, int], word_ids: dict[str, int]) -> list[int]:
        """Term ids of ``text``, growing ``vocab``; ``word_ids`` caches surface word -> id (-1: dropped).

        The fast path of indexing: most words of a corpus are seen many times.
        """
        words = self.words(text)
        try:
            ids = [word_ids[w] for w in words]
        except KeyError:
            for w in words:
                if w not in word_ids:
                    t = self._term(w)
                    word_ids[w] = -1 if t is None else vocab.setdefault(t, len(vocab))
            ids = [word_ids[w] for w in words]
        return [i for i in ids if i >= 0]


def _bm25s() -> Any:
    """Import bm25s without its import-time ``setLevel(DEBUG)``: the application sets the level
    (the CLI's ``-q`` must hide its debug lines), so the logger keeps the level it had before."""
    import sys

    if "bm25s" in sys.modules:
        return sys.modules["bm25s"]
    log = logging.getLogger("bm25s")
    level = log.level
    import bm25s

    log.setLevel(level)
    return bm25s


class BM25Retriever:
    """Lexical BM25 retrieval over a corpus, returning runs (``{qid: {docid: score}}``).

    Args:
        k1, b: BM25 parameters (Pyserini's defaults for BEIR).
        method: bm25s scoring variant; ``"lucene"`` is Lucene's (and so Pyserini's) formula.
        stemmer: a PyStemmer algorithm (``"porter"`` as Lucene, ``"english"`` for Porter2) or None.
        stopwords: ``"en"`` (Lucene's 33 English stop words), another bm25s language code, a list
            of words, or None.
        lowercase: lower-case text before tokenizing.
        token_pattern: regex whose matches are the tokens (default :data:`LUCENE_TOKEN_PATTERN`).
    """

    def __init__(self, k1: float = 0.9, b: float = 0.4, method: Method = "lucene",
                 stemmer: str | None = "porter", stopwords: str | list[str] | None = "en", *,
                 lowercase: bool = True, token_pattern: str = LUCENE_TOKEN_PATTERN):
        if method not in ("lucene", "robertson", "atire", "bm25l", "bm25+"):
            raise ConfigError(f"method {method!r} is not one of lucene, robertson, atire, bm25l, bm25+")
        self.k1, self.b, self.method = float(k1), float(b), method
        self.analyzer = _Analyzer(stemmer, stopwords, lowercase, token_pattern)
        self._bm25: Any = None
        self._doc_ids: list[str] = []

    def __repr__(self) -> str:
        state = f"{len(self._doc_ids)} docs" if self._bm25 is not None else "not indexed"
        return f"BM25Retriever({self.params()}, {state})"

    # ------------------------------------------------------------------ configuration
    def params(self) -> dict[str, Any]:
        """The settings that define the index (JSON-able; what :meth:`save` records)."""
        return {"k1": self.k1, "b": self.b, "method": self.method, **self.analyzer.settings}

    def analyze(self, text: str) -> list[str]:
        """The terms BM25 sees for ``text``."""
        return self.analyzer(text)

    @property
    def doc_ids(self) -> list[str]:
        """Indexed document ids, in index order."""
        return list(self._doc_ids)

    # ------------------------------------------------------------------ indexing
    def index(self, corpus: Mapping[str, Mapping[str, str]] | Dataset, *,
              show_progress: bool | None = None) -> BM25Retriever:
        """Index ``corpus`` (doc id -> ``{"title", "text"}``, or a :class:`Dataset`); returns self."""
        bm25s = _bm25s()

        docs = corpus.corpus if isinstance(corpus, Dataset) else corpus
        if not docs:
            raise DataError("cannot build a BM25 index over an empty corpus")
        ids = list(docs)
        vocab: dict[str, int] = {}
        word_ids: dict[str, int] = {}
        to_ids = self.analyzer.ids
        token_ids = [to_ids(doc_text(docs[did]), vocab, word_ids)
                     for did in progress(ids, desc="BM25 tokenize", disable=_quiet(show_progress))]
        if not vocab:
            raise DataError("no document has a single indexable term (all empty or stop words)")
        bm = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        # Our own vocabulary (first-seen order, not a set) keeps saved indexes byte-identical.
        bm.index((token_ids, vocab), create_empty_token=False, show_progress=not _quiet(show_progress))
        self._set(bm, ids)
        logger.info("BM25 index: %d docs, %d terms", len(ids), len(vocab))
        return self

    def _set(self, bm: Any, doc_ids: list[str]) -> None:
        from scipy.sparse import csr_matrix

        self._bm25 = bm
        self._doc_ids = doc_ids
        s = bm.scores
        n_terms = len(s["indptr"]) - 1
        # bm25s stores docs x terms in CSC: the same arrays are terms x docs in CSR, no copy.
        self._term_docs = csr_matrix((s["data"], s["indices"], s["indptr"]), shape=(n_terms, len(doc_ids)))
        self._df = np.diff(np.asarray(s["indptr"]))
        nnoc = getattr(bm, "nonoccurrence_array", None)
        self._nonoccurrence = None if nnoc is None else np.asarray(nnoc)
        # tie-break key: position of each doc in descending id order (trec_eval's tie order)
        order = sorted(range(len(doc_ids)), key=doc_ids.__getitem__, reverse=True)
        self._tie_rank = np.empty(len(doc_ids), dtype=np.int64)
        self._tie_rank[order] = np.arange(len(doc_ids))

    def _require_index(self) -> None:
        if self._bm25 is None:
            raise ConfigError("BM25Retriever has no index: call index(corpus) or BM25Retriever.load(dir) first")

    # ------------------------------------------------------------------ search
    def search(self, queries: Mapping[str, str], k: int = 100, show_progress: bool | None = None
               ) -> dict[str, dict[str, float]]:
        """Top-``k`` documents for each query: ``{qid: {docid: score}}``, best first.

        ``k`` larger than the corpus is clipped to it. Queries are scored in batches (a sparse
        product with bm25s's score matrix); repeated query terms count repeatedly, as in Lucene.
        """
        self._require_index()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(int(k), len(self._doc_ids))
        vocab = self._bm25.vocab_dict
        qids = list(queries)
        term_lists = [[vocab[t] for t in self.analyzer(queries[q]) if t in vocab] for q in qids]
        run: dict[str, dict[str, float]] = {}
        bar = progress(total=len(qids), desc="BM25 search", disable=_quiet(show_progress))
        with bar:
            for start, stop in self._batches(term_lists):
                self._search_batch(qids[start:stop], term_lists[start:stop], k, run)
                bar.update(stop - start)
        return run

    def score_pairs(self, queries: Mapping[str, str], pairs: Mapping[str, Iterable[str]]
                    ) -> dict[str, dict[str, float]]:
        """BM25 scores of given documents: ``{qid: {docid: score}}`` for every ``docid`` in ``pairs[qid]``.

        The same scores :meth:`search` gives those documents, wherever they rank (0.0 for a document
        that shares no term with the query, with the default ``lucene`` method), so a pair outside a query's top ``k`` is scored too.

        Raises:
            KeyError: a query id of ``pairs`` is not in ``queries``, or a document id is not indexed.
        """
        self._require_index()
        position = {d: i for i, d in enumerate(self._doc_ids)}
        vocab = self._bm25.vocab_dict
        out: dict[str, dict[str, float]] = {}
        for qid, dids in pairs.items():
            dids = list(dids)
            missing = [d for d in dids if d not in position]
            if missing:
                raise KeyError(f"documents not in the BM25 index: {missing[:3]} (query {qid!r})")
            terms = [vocab[t] for t in self.analyzer(queries[qid]) if t in vocab]
            cols = np.array([position[d] for d in dids], dtype=np.int64)
            if terms:  # a repeated query term counts repeatedly, as in search()
                vals = np.asarray(self._term_docs[terms][:, cols].sum(axis=0)).ravel()
                if self._nonoccurrence is not None:
                    vals = vals + self._nonoccurrence[terms].sum()
            else:
                vals = np.zeros(len(cols))
            out[qid] = {d: float(v) for d, v in zip(dids, vals.tolist(), strict=True)}
        return out

    def _batches(self, term_lists: list[list[int]]) -> Iterable[tuple[int, int]]:
        """Consecutive query ranges whose estimated number of (query, doc) matches fits the budget."""
        start, load = 0, 0
        for i, terms in enumerate(term_lists):
            cost = int(self._df[terms].sum()) if terms else 0
            if i > start and load + cost > _NNZ_BUDGET:
                yield start, i
                start, load = i, 0
            load += cost
        if start < len(term_lists):
            yield start, len(term_lists)

    def _search_batch(self, qids: list[str], term_lists: list[list[int]], k: int,
                      run: dict[str, dict[str, float]]) -> None:
        from scipy.sparse import csr_matrix

        indptr = np.zeros(len(qids) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(t) for t in term_lists])
        cols = np.fromiter((t for terms in term_lists for t in terms), dtype=np.int64, count=int(indptr[-1]))
        queries = csr_matrix((np.ones(len(cols), dtype=self._term_docs.dtype), cols, indptr),
                             shape=(len(qids), self._term_docs.shape[0]))
        scores = (queries @ self._term_docs).tocsr()  # queries x docs, only matching docs stored
        scores.sort_indices()
        doc_ids = self._doc_ids
        for row, qid in enumerate(qids):
            lo, hi = scores.indptr[row], scores.indptr[row + 1]
            docs, vals = scores.indices[lo:hi], scores.data[lo:hi]
            if self._nonoccurrence is not None and len(docs):
                # BM25L/BM25+ give every document a per-term floor; it shifts all matches equally.
                vals = vals + self._nonoccurrence[term_lists[row]].sum()
            if len(docs) > k:
                kth = np.partition(vals, len(vals) - k)[len(vals) - k]
                keep = vals >= kth  # ties at the cut are all kept, then cut by the tie order
                docs, vals = docs[keep], vals[keep]
            order = np.lexsort((self._tie_rank[docs], -vals))[:k]
            run[qid] = {doc_ids[d]: float(v) for d, v in zip(docs[order].tolist(), vals[order].tolist(), strict=True)}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the index: bm25s's own arrays and vocabulary, plus ``dualist_bm25.json``
        (analyzer settings and doc ids). No pickle."""
        bm25s = _bm25s()

        self._require_index()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._bm25.save(directory, show_progress=False)
        write_json(directory / PARAMS_FILE, {"params": self.params(), "bm25s_version": bm25s.__version__,
                                             "doc_ids": self._doc_ids}, indent=None)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> BM25Retriever:
        """Load an index written by :meth:`save` (``mmap=True`` maps the score arrays from disk)."""
        bm25s = _bm25s()

        directory = Path(directory)
        meta_path = directory / PARAMS_FILE
        if not meta_path.is_file():
            raise DataError(f"not a dualist BM25 index: {PARAMS_FILE} is missing", path=directory,
                            hint="build one with BM25Retriever().index(corpus).save(dir)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            params, doc_ids = meta["params"], meta["doc_ids"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"unreadable BM25 index settings ({e})", path=meta_path,
                            hint="rebuild the index") from None
        self = cls(**params)
        bm = bm25s.BM25.load(directory, mmap=mmap, show_progress=False)
        if bm.scores["num_docs"] != len(doc_ids):
            raise DataError(f"index holds {bm.scores['num_docs']} documents but {PARAMS_FILE} lists "
                            f"{len(doc_ids)}", path=directory, hint="the folder mixes two indexes; rebuild it")
        self._set(bm, list(doc_ids))
        return self


def _quiet(show_progress: bool | None) -> bool:
    return not (progress_enabled() if show_progress is None else show_progress)


def bm25_run(dataset: Dataset, split: str, k: int = 100, out_path: str | Path | None = None,
             **params: Any) -> dict[str, dict[str, float]]:
    """BM25 top-``k`` for the queries of ``split``; also written as a TREC run when ``out_path`` is set.

    ``params`` go to :class:`BM25Retriever` (``k1``, ``b``, ``stemmer``...).
    """
    from dualist.data.trec import write_trec_run

    retriever = BM25Retriever(**params).index(dataset)
    run = retriever.search(dataset.queries_for(split), k=k)
    if out_path is not None:
        write_trec_run(run, out_path, tag="bm25")
    return run
