"""MilvusIndex against a real Milvus server, not milvus-lite: the same code, a server URI.

The server is the standalone Milvus that the ``milvus`` package ships (``pip install
'dualist[milvus-server]'``), started the way its users start it, with the ``milvus-server``
command; the module shuts it down with Ctrl-C (SIGINT) at the end. Slow: the server takes
tens of seconds to start.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SERVER = Path(sys.executable).parent / "milvus-server"
if importlib.util.find_spec("pymilvus") is None or not SERVER.exists():
    pytest.skip("needs the Milvus server package: pip install 'dualist[milvus-server]' "
                "(the 'milvus' wheel, which installs the milvus-server command)", allow_module_level=True)

from dualist.errors import ConfigError, DataError  # noqa: E402
from dualist.evaluation.modes import encode_corpus, search_space  # noqa: E402
from dualist.index import ExactIndex, MilvusIndex, load_index  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URI of a running Milvus server, stopped (and checked stopped) after the module."""
    data = tmp_path_factory.mktemp("milvus-server")
    proc = subprocess.Popen([str(SERVER), "--data", str(data), "--proxy-port", str(_free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines, deadline = [], time.time() + 300
    while time.time() < deadline:  # it prints its banner once its health check answers
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "Ctrl+C to exit" in line:
            break
    else:
        proc.kill()
    if not lines or "Ctrl+C to exit" not in lines[-1]:
        proc.kill()
        logs = "".join(p.read_text(errors="replace")[-3000:] for p in (data / "logs").glob("milvus-*.log"))
        pytest.fail("Milvus server did not start:\n" + "".join(lines) + logs)
    # the proxy port it bound (the command moves to the next free port if the one asked for is taken)
    port = int(yaml.safe_load((data / "configs" / "milvus.yaml").read_text())["proxy"]["port"])
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not _accepts(port)


@pytest.fixture(scope="module")
def student_corpus(tiny_beir, tiny_bert, tmp_path_factory):
    """(student, dataset, ids, document vectors, query vectors, exact top 10) of a real student."""
    from dualist.data import load_beir
    from dualist.models import DualEncoder

    folder = tmp_path_factory.mktemp("student")
    DualEncoder(model=str(tiny_bert)).save_pretrained(folder)
    de = DualEncoder.from_pretrained(folder)
    ds = load_beir(tiny_beir)
    ids, emb = encode_corpus(de, ds)
    docs = search_space(de, emb)
    queries = list(ds.queries.values())[:20]
    q = search_space(de, de.encode_queries(queries), query=True)
    exact = ExactIndex()
    exact.add(ids, docs)
    return folder, ids, docs, q, exact.search(q, 10)


def test_flat_equals_the_exact_index_through_save_reload_and_drop(server, student_corpus, tmp_path):
    _, ids, docs, q, ref = student_corpus
    index = MilvusIndex(server, collection="flat_test", index_type="FLAT")
    index.add(ids[:20], docs[:20])
    index.add(ids[20:], docs[20:])
    res = index.search(q, 10)
    assert res.ids == ref.ids
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-5, atol=1e-5)
    index.save(tmp_path / "idx")
    index.close()
    assert not (tmp_path / "idx" / "milvus.db").exists()  # the rows live on the server
    loaded = load_index(tmp_path / "idx")
    assert isinstance(loaded, MilvusIndex) and loaded.uri == server and len(loaded) == len(ids)
    res = loaded.search(q, 10)
    assert res.ids == ref.ids
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="already exists"):
        MilvusIndex(server, collection="flat_test").add(ids[:1], docs[:1])
    loaded.drop()
    loaded.close()
    with pytest.raises(DataError, match="no collection"):
        load_index(tmp_path / "idx")


@pytest.mark.parametrize("index_type,quantization", [("HNSW", "none"), ("IVF_FLAT", "int8")])
def test_approximate_indexes_on_a_server(server, student_corpus, index_type, quantization):
    _, ids, docs, q, ref = student_corpus
    index = MilvusIndex(server, collection=f"{index_type.lower()}_{quantization}", index_type=index_type,
                        quantization=quantization, search_params={"nprobe": 128} if index_type == "IVF_FLAT" else None)
    index.add(ids, docs)
    res = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, ref.ids)])
    assert recall >= 0.9, recall
    if quantization != "none":  # re-scored exactly: every score is the true inner product
        pos = {d: i for i, d in enumerate(ids)}
        for qi, (hits, scores) in enumerate(zip(res.ids, res.scores)):
            np.testing.assert_allclose(scores, docs[[pos[d] for d in hits]] @ q[qi], rtol=1e-5, atol=1e-5)
    index.drop()
    index.close()


def test_cli_index_and_search_on_a_server(server, student_corpus, tiny_beir, tmp_path):
    """The README's path: `dualist index --backend milvus --milvus-uri URI`, then `dualist search`."""
    from dualist.cli import main
    from dualist.data import read_trec_run

    folder = student_corpus[0]
    common = ["--data", str(tiny_beir), "--model", str(folder), "-q"]
    assert main(["index", *common, "--backend", "milvus", "--milvus-uri", server, "--milvus-index", "FLAT",
                 "--collection", "cli_test", "--out", str(tmp_path / "m")]) == 0
    assert main(["index", *common, "--out", str(tmp_path / "x")]) == 0
    for name in ("m", "x"):
        assert main(["search", *common, "--index", str(tmp_path / name), "--k", "5",
                     "--out", str(tmp_path / f"{name}.trec")]) == 0
    milvus, exact = read_trec_run(tmp_path / "m.trec"), read_trec_run(tmp_path / "x.trec")
    assert milvus and {q: list(d) for q, d in milvus.items()} == {q: list(d) for q, d in exact.items()}
    index = load_index(tmp_path / "m")
    index.drop()
    index.close()


@pytest.mark.parametrize("index_type,quantization", [("HNSW", "int8"), ("FLAT", "binary")])
def test_an_index_type_the_server_refuses_is_a_clear_error_and_leaves_no_collection(server, student_corpus,
                                                                                    index_type, quantization):
    from pymilvus import MilvusClient

    _, ids, docs, _, _ = student_corpus
    client = MilvusClient(uri=server)
    try:
        version = client.get_server_version()
        if not version.startswith("v2.3"):
            pytest.skip(f"the refusal is checked on the Milvus 2.3 server; this one is {version}")
        index = MilvusIndex(server, collection="refused", index_type=index_type, quantization=quantization)
        with pytest.raises(ConfigError, match="refuses the index type .*(HNSW_SQ|IVF_RABITQ)"):
            index.add(ids, docs)
        assert not client.has_collection("refused")
    finally:
        client.close()
