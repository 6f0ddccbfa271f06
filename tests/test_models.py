"""Model loading: clear errors for missing or corrupt folders."""

from __future__ import annotations

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
