"""Tiny offline fixtures: a BEIR-format dataset and a random BERT, built locally in seconds.

Used by dualist's own tests and handy for yours: everything here works without a network.

>>> import tempfile, pathlib
>>> d = make_tiny_beir(pathlib.Path(tempfile.mkdtemp()) / "tiny")
>>> sorted(p.name for p in d.iterdir())
['corpus.jsonl', 'qrels', 'queries.jsonl']
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["make_tiny_beir", "make_tiny_bert", "TOPICS"]

# Each topic has its own words; a query about a topic is relevant to that topic's documents.
TOPICS: dict[str, list[str]] = {
    "protein": ["protein", "folding", "amino", "enzyme", "binding", "peptide"],
    "climate": ["climate", "warming", "carbon", "emission", "ocean", "temperature"],
    "vaccine": ["vaccine", "immune", "antibody", "virus", "dose", "infection"],
    "brain": ["brain", "neuron", "cortex", "memory", "synapse", "cognitive"],
    "cancer": ["cancer", "tumor", "chemotherapy", "metastasis", "oncology", "cell"],
    "diet": ["diet", "sugar", "obesity", "fiber", "calorie", "nutrition"],
    "sleep": ["sleep", "circadian", "insomnia", "melatonin", "rest", "night"],
    "genome": ["genome", "dna", "sequencing", "mutation", "gene", "chromosome"],
}
FILLER = ["study", "results", "show", "effect", "patients", "analysis", "data", "increase",
          "reduced", "associated", "with", "the", "of", "and", "in", "a", "we", "found"]


def make_tiny_beir(path: str | Path, *, docs_per_topic: int = 6, queries_per_topic: int = 6,
                   seed: int = 0) -> Path:
    """Write a small BEIR folder (corpus, queries, qrels train/dev/test) and return its path.

    Topic ``k`` has ``docs_per_topic`` documents; each query about topic ``k`` has one or two
    relevant documents of that topic (graded 1 or 2), so lexical and learned models can both work.
    """
    rng = random.Random(seed)
    path = Path(path)
    (path / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], {"train": [], "dev": [], "test": []}
    for t, (topic, words) in enumerate(TOPICS.items()):
        doc_ids = []
        for i in range(docs_per_topic):
            did = f"d{t}{i:02d}"
            doc_ids.append(did)
            body = rng.sample(words, 4) + rng.sample(FILLER, 6)
            rng.shuffle(body)
            corpus.append({"_id": did, "title": f"{topic} {words[i % len(words)]}",
                           "text": " ".join(body) + "."})
        for j in range(queries_per_topic):
            qid = f"q{t}{j:02d}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(words, 3))})
            split = "train" if j < queries_per_topic - 2 else ("dev" if j == queries_per_topic - 2 else "test")
            rel = rng.sample(doc_ids, 2)
            qrels[split].append((qid, rel[0], 2))
            qrels[split].append((qid, rel[1], 1))
    with open(path / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in corpus:
            fh.write(json.dumps(d) + "\n")
    with open(path / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q) + "\n")
    for split, rows in qrels.items():
        with open(path / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, did, s in rows:
                fh.write(f"{qid}\t{did}\t{s}\n")
    return path


def make_tiny_bert(path: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 2,
                   seed: int = 0) -> Path:
    """Save a randomly initialised tiny BERT + WordPiece tokenizer (vocab from :data:`TOPICS`).

    The folder is a normal Hugging Face model directory, usable anywhere a model id is.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER) | set(TOPICS))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters), *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores ``vocab_file`` in the fast constructor; pass the mapping itself.
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    return path
