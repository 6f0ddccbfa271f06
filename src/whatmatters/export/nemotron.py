"""Write a pruned Llama-family model as a Hugging Face `nemotron-nas` (DeciLM) folder, the per-layer format
vLLM and SGLang (`nemotron_nas.py`), TensorRT-LLM (`NemotronNASForCausalLM`) and mlx-lm load.

config.json lists one `block_configs` entry per written layer: `attention.no_op` / `n_heads_in_group` and
`ffn.no_op` / `ffn_mult`. Weights keep the Llama names (`model.layers.{i}.self_attn.q_proj.weight`, HF rotary
layout); a no-op module has none of its weights or its norm, since vLLM fails on a weight whose module it did
not build. A layer that lost both sub-layers is removed (`layers.export_layers`). The folder ships our own
`configuration_decilm.py` (transformers has no `nemotron-nas` type): engines need `trust_remote_code=True`.

Two plans are refused, naming the engine limit:
* the first written layer without attention: vLLM's DeciLM layer carries the residual from the first
  attention on, so an MLP before any attention runs its add-norm with no residual and fails;
* an MLP width that `ffn_mult` cannot express: engines compute the width as
  `ceil_256(int(2 * ffn_mult * hidden / 3))`, so it must be a multiple of 256.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters.adapters import adapter_for
from whatmatters.export import configuration_decilm
from whatmatters.export.configuration_decilm import AttentionConfig, BlockConfig, DeciLMConfig, FFNConfig
from whatmatters.export.layers import ExportError, ExportLayer, check_llama_family, export_layers, model_plan
from whatmatters.files import atomic_folder

WEIGHTS = "model.safetensors"
ARCHITECTURE = "DeciLMForCausalLM"
MULTIPLE = 256  # engines round the MLP width up to a multiple of this (`_find_multiple(..., 256)`)


def ffn_mult(intermediate_size: int, hidden_size: int) -> float:
    """The `ffn_mult` engines turn back into `intermediate_size`; refuses a width it cannot express."""
    if intermediate_size % MULTIPLE:
        raise ExportError(
            f"intermediate_size={intermediate_size} is not a multiple of {MULTIPLE}: nemotron-nas engines "
            f"derive the MLP width as a multiple of {MULTIPLE} from ffn_mult, so this model cannot be "
            "written in that layout. Export it as GGUF instead (formats=[gguf])."
        )
    return 1.5 * intermediate_size / hidden_size


def block_configs(model: PreTrainedModel) -> tuple[list[BlockConfig], list[ExportLayer]]:
    """One block config per written layer, and those layers; ExportError for what engines cannot run."""
    check_llama_family(model)
    c = model.config
    layers = export_layers(model_plan(model))
    if not layers[0].attn:
        raise ExportError(
            f"The plan drops the attention of layer {layers[0].source}, the first layer written: vLLM's "
            "nemotron-nas model adds the residual only from the first attention on, so an MLP before any "
            "attention fails there. Keep that attention (drop another), or export GGUF (formats=[gguf])."
        )
    mult = ffn_mult(c.intermediate_size, c.hidden_size)
    group = c.num_attention_heads // c.num_key_value_heads
    configs = [
        BlockConfig(
            AttentionConfig(no_op=not layer.attn, n_heads_in_group=group if layer.attn else None),
            FFNConfig(no_op=not layer.mlp, ffn_mult=mult if layer.mlp else None),
        )
        for layer in layers
    ]
    return configs, layers


def weights(model: PreTrainedModel, layers: list[ExportLayer], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors under the names vLLM's DeciLM loader looks up, layers renumbered 0..len(layers)-1."""
    hf_layers = adapter_for(model).layers(model)
    out = {
        "model.embed_tokens.weight": model.get_input_embeddings().weight,
        "model.norm.weight": model.model.norm.weight,
    }
    if not model.config.tie_word_embeddings:
        out["lm_head.weight"] = model.get_output_embeddings().weight
    for j, layer in enumerate(layers):
        for rel, param in hf_layers[layer.position].named_parameters():
            out[f"model.layers.{j}.{rel}"] = param
    return {name: t.detach().to("cpu", dtype).contiguous() for name, t in out.items()}


def write_nemotron(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path, dtype: str = "bfloat16"
) -> list[BlockConfig]:
    """Write config.json, configuration_decilm.py, the weights and the tokenizer to `folder`, atomically."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ExportError(f"dtype={dtype!r} is not valid: one of {sorted(dtypes)}. Fix: dtype=bfloat16")
    configs, layers = block_configs(model)
    c = model.config
    config = DeciLMConfig(
        block_configs=configs,
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        # What the kept layers have; engines read each layer's own from block_configs.
        intermediate_size=c.intermediate_size,
        num_hidden_layers=len(layers),
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        hidden_act="silu",
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters=dict(c.rope_parameters),
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
    )
    config.architectures = [ARCHITECTURE]
    config.auto_map = {"AutoConfig": "configuration_decilm.DeciLMConfig"}
    config.dtype = dtype
    with atomic_folder(Path(folder)) as tmp:  # an export cut short leaves no half folder
        config.save_pretrained(tmp)
        shutil.copy(configuration_decilm.__file__, tmp / "configuration_decilm.py")
        save_file(weights(model, layers, dtypes[dtype]), tmp / WEIGHTS, metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
    return configs
