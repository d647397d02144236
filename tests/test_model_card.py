"""Model cards in saved folders, ``dualist card`` and ``dualist push`` (offline: a clear error)."""

from __future__ import annotations

import json

import pytest
import yaml

from dualist.cli import main
from dualist.models import CrossEncoder, DualEncoder
from dualist.models.card import write_model_card

pytestmark = pytest.mark.usefixtures("one_thread")


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def student(tiny_bert, tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "student"
    DualEncoder(model=str(tiny_bert)).save_pretrained(path)
    return path


def test_saved_student_and_teacher_have_hub_cards(student, tiny_bert, tmp_path):
    text = (student / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert "dualist" in meta["tags"]
    assert "SentenceTransformer(" in text and "DualEncoder.from_pretrained(" in text
    CrossEncoder(model=str(tiny_bert)).save_pretrained(tmp_path / "teacher")
    t = (tmp_path / "teacher" / "README.md").read_text()
    assert front_matter(t)["pipeline_tag"] == "text-ranking" and "CrossEncoder.from_pretrained(" in t
    assert "loads in dualist only" in t  # the default mean-pooled head is not a sentence-transformers CrossEncoder


def test_card_records_training_and_figures(student):
    write_model_card(student, training={"loss": "m3se", "dataset": "scifact", "split": "train", "steps": 200,
                                        "batch_size": 16, "lr": 2e-5},
                     results={"dev": {"ndcg@10": 0.7}})
    write_model_card(student, results={"test": {"ndcg@10": 0.653, "mrr@10": 0.6}})  # merged, not replaced
    text = (student / "README.md").read_text()
    meta = front_matter(text)
    assert meta["datasets"] == ["BeIR/scifact"] and "distillation-m3se" in meta["tags"]
    values = {(r["dataset"]["split"], r["metrics"][0]["type"]): r["metrics"][0]["value"]
              for r in meta["model-index"][0]["results"]}
    assert values == {("dev", "ndcg_at_10"): 0.7, ("test", "ndcg_at_10"): 0.653, ("test", "mrr_at_10"): 0.6}
    assert "M3SE" in text and "steps 200, batch_size 16" in text and "| test | ndcg@10 | 0.6530 |" in text


def test_trained_student_card_has_loss_data_budget_and_dev(tiny_train, tiny_bert, tmp_path):
    from dualist.models import DualEncoderConfig
    from dualist.training import TrainConfig, train_student

    ds, run = tiny_train
    out = train_student(ds, "train", run, DualEncoderConfig(model=str(tiny_bert)),
                        TrainConfig(max_steps=2, batch_size=4, num_negatives=2), tmp_path / "s", loss="onehot",
                        eval_fn=lambda m: {"ndcg@10": 0.25})
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["loss"] == "onehot" and card["training"]["steps"] == 2
    assert card["training"]["dataset"] == ds.name and card["results"]["dev"] == {"ndcg@10": 0.25}
    assert "| dev | ndcg@10 | 0.2500 |" in (out / "README.md").read_text()


def test_cli_card_adds_test_figures(student, tmp_path, capsys):
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"mean": {"recall@100": 0.9}, "per_query": {}}))
    assert main(["card", "--model", str(student), "--results", str(res), "--split", "test", "-q"]) == 0
    assert "| test | recall@100 | 0.9000 |" in (student / "README.md").read_text()


def test_push_offline_fails_clearly(student, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", "--model", str(student), "--repo-id", "me/tiny", "-q"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and "dualist push" in err


def test_push_without_network_fails_clearly(student, monkeypatch, capsys):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False, raising=False)
    assert main(["push", "--model", str(student), "--repo-id", "me/tiny", "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face Hub" in err and "looks offline" in err


def test_push_rejects_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["push", "--model", str(tmp_path), "--repo-id", "me/x", "-q"]) == 2
    assert "not a saved dualist model" in capsys.readouterr().err
