"""Shared fixtures: tiny random models of every supported family, built from configs (no download)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from whatmatters.records.store import Docs, RunRecord

# Small enough to run in milliseconds, large enough to have GQA, several layers and (Gemma3) a sliding window.
TINY = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
)
FAMILY_EXTRAS: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {},
    "gemma": {},
    "gemma2": {"sliding_window": 8, "query_pre_attn_scalar": 8},
    "gemma3_text": {"sliding_window": 8, "query_pre_attn_scalar": 8, "sliding_window_pattern": 2},
}
FAMILIES = list(FAMILY_EXTRAS)


def tiny_model(model_type: str, seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised `model_type` model of the TINY shape, in float32 eval mode."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**TINY, **FAMILY_EXTRAS[model_type], **overrides})
    config._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny_llama_dir(tmp_path):
    """A saved tiny Llama with a tokenizer, like a user's local model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(TINY["vocab_size"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="w1", pad_token="w1")
    path = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(path)
    tok.save_pretrained(path)
    return path


def record_dict(target: str, n: int, avg: float, experiment: str | None = "table2", **extra) -> dict:
    """A results-store record as JSON holds it (schema 1 layout: scalar speedup, no per-doc values)."""
    method = {"target": target, "n": n, "ratio": None, "consecutive": False, "remove_residual": False}
    return {
        "key": f"{target}{n}",
        "model": "smollm2-135m",
        "experiments": [experiment] if experiment else [],
        "method": method,
        "mode": "one_shot",
        "criterion": "cosine",
        "dropped": n,
        "num_layers": 30,
        "eval": {
            "suite": "embedded",
            "avg": avg,
            "tasks": {"wm_cloze": {"metric": "acc", "value": avg, "stderr": 1.0}},
        },
        "speed": {"speedup": 1.0 + n / 100, "kv_ratio": (30 - n) / 30 if target == "attn" else 1.0},
        "sdr": None if n == 0 else (50.0 - avg) / n,
    } | extra


def record(target: str, n: int, avg: float, experiment: str | None = "table2", **extra) -> RunRecord:
    """A typed run record as experiments/run.py writes it, for table, figure and tracking tests."""
    return RunRecord.from_dict(record_dict(target, n, avg, experiment, **extra))


def with_docs(rec: RunRecord, values: list[float], ids: list[str] | None = None) -> RunRecord:
    """`rec` with per-doc 0/1 values for its one task (value and avg follow from them)."""
    ids = ids or [str(i) for i in range(len(values))]
    task = rec.eval.tasks["wm_cloze"]
    task.docs = Docs(ids=ids, values=values)
    task.value = rec.eval.avg = 100.0 * sum(values) / len(values)
    return rec


@pytest.fixture
def saved_axes(monkeypatch):
    """The first axes of every figure `report.plots.save_figure` saves, by file stem, kept open so a test
    reads what was drawn (the figure tests assert the data each figure draws)."""
    from whatmatters.report import plots

    kept, save = {}, plots.save_figure

    def keep(fig, stem, data):
        kept[stem.name] = fig.axes[0]
        return save(fig, stem, data)

    monkeypatch.setattr(plots, "save_figure", keep)
    return kept
