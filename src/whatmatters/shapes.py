"""The paper's models as shapes without weights: time a 13B or 70B model without downloading it.

Speed depends on the shape (layers, widths, heads, vocabulary), not on the weight values, so a
random-weight model of the right shape times like the real one. The sizes are those of each
model's public `config.json` on the Hugging Face Hub. Names match the presets in `conf/model/`.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import LlamaConfig, MistralConfig, PreTrainedConfig


def _llama(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    rope_theta: float,
    max_pos: int,
) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        max_position_embeddings=max_pos,
        rms_norm_eps=1e-5,
    )


def llama2_13b() -> LlamaConfig:
    """meta-llama/Llama-2-13b-hf: 40 layers, no GQA (40 KV heads)."""
    return _llama(5120, 40, 40, 40, 13824, 32000, 10000.0, 4096)


def llama2_70b() -> LlamaConfig:
    """meta-llama/Llama-2-70b-hf: 80 layers, GQA with 8 KV heads."""
    return _llama(8192, 80, 64, 8, 28672, 32000, 10000.0, 4096)


def llama3_8b() -> LlamaConfig:
    """meta-llama/Meta-Llama-3-8B: 32 layers, 8 KV heads, 128k vocabulary."""
    return _llama(4096, 32, 32, 8, 14336, 128256, 500000.0, 8192)


def llama3_70b() -> LlamaConfig:
    """meta-llama/Meta-Llama-3-70B: 80 layers, 8 KV heads, 128k vocabulary."""
    return _llama(8192, 80, 64, 8, 28672, 128256, 500000.0, 8192)


def mistral_7b() -> MistralConfig:
    """mistralai/Mistral-7B-v0.1: 32 layers, 8 KV heads, a 4096-token sliding window on every layer."""
    return MistralConfig(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=32000,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=32768,
        sliding_window=4096,
        rms_norm_eps=1e-5,
    )


SHAPES: dict[str, Callable[[], PreTrainedConfig]] = {
    "llama2-13b": llama2_13b,
    "llama2-70b": llama2_70b,
    "llama3-8b": llama3_8b,
    "llama3-70b": llama3_70b,
    "mistral-7b": mistral_7b,
}


def config(name: str) -> PreTrainedConfig:
    """A fresh config of paper model `name` (one of SHAPES)."""
    if name not in SHAPES:
        raise ValueError(f"Unknown model shape {name!r}; choose one of {sorted(SHAPES)}")
    return SHAPES[name]()
