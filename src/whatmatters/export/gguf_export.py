"""Write a pruned Llama-family model as a GGUF file that llama.cpp runs, written with the `gguf` package.

A plan that drops only whole blocks is the original `llama` architecture with fewer layers. Any attention or
MLP drop needs per-layer shapes, which llama.cpp reads as the `deci` architecture (its Nemotron-NAS graph):
per-layer arrays `deci.attention.head_count`, `head_count_kv` and `feed_forward_length`. What llama.cpp
0.3.36's deci graph does with them decides three rules (read from its `src/models/deci.cpp` and checked
against transformers in tests/test_export.py):

* attention dropped: head_count = head_count_kv = 0 and no attention tensors. Exact, and the layer holds no
  KV cache (with flash attention on; without it llama.cpp pads every layer's V cache to the widest).
* MLP dropped: NOT feed_forward_length 0. With n_ff 0 the graph skips the rest of the layer, including the
  residual add of its attention output, so the attention is lost too. We write a minimal FFN instead,
  `ZERO_FFN` wide with zero gate/up/down weights and unit norm: it adds exactly +0.0 (SwiGLU(0) = 0).
* attention dropped in the first written layer: llama.cpp takes the head size from layer 0's head count, so
  a 0 there breaks every other layer ("wrong shape ... expected 576, 0"). We prepend a dummy layer with
  heads but no KV heads (llama.cpp's "linear attention": a zero output projection) and n_ff 0: llama.cpp
  derives the head size from it, never uses its output (n_ff 0 skips to the next layer, keeping the
  stream), and gives it no KV cache. Exact; costs one unused 576 x 576 zero matrix in the file.

A layer that lost both sub-layers is removed (`layers.export_layers`): with n_ff 0 and no heads in the last
layer llama.cpp aborts the process. Dtypes: f32, f16, bf16 are written here (1-D norms stay f32, as
llama.cpp's converter does); q8_0 and q4_k_m go through llama.cpp's own quantizer
(`llama_cpp.llama_model_quantize`, needs `make setup-serve`) from an f32 file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters.adapters import adapter_for
from whatmatters.export.layers import ExportError, ExportLayer, check_llama_family, export_layers, model_plan

ZERO_FFN = 32  # width of the stand-in for a dropped MLP: one quantization block, so q8_0 / q4 keep it
WRITTEN = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
           "bf16": gguf.GGMLQuantizationType.BF16}  # fmt: skip
# llama.cpp's quantizer, by llama_ftype (gguf.LlamaFileType): written as f32 first, then quantized.
QUANTIZED = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}
DTYPES = (*WRITTEN, *QUANTIZED)
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16}  # fmt: skip
PLAN_KEY = "whatmatters.drop_plan"  # the plan, as JSON, in the file's metadata (llama.cpp ignores it)


@dataclass(frozen=True)
class GgufLayout:
    """What the file holds per written layer (dummy first layer included): heads, KV heads, FFN width."""

    arch: str
    head_count: list[int]
    head_count_kv: list[int]
    feed_forward_length: list[int]
    dummy_first: bool

    def kv_bytes_per_token(self, head_dim: int, bytes_per_value: int = 2) -> int:
        """K and V bytes one cached token takes in llama.cpp with flash attention on (f16 cache: 2 bytes)."""
        return sum(2 * head_dim * kv * bytes_per_value for kv in self.head_count_kv)


def layout(model: PreTrainedModel) -> tuple[GgufLayout, list[ExportLayer]]:
    """The GGUF architecture and per-layer shapes of a (pruned) model; raises ExportError where it cannot."""
    check_llama_family(model)
    c = model.config
    plan = model_plan(model)
    layers = export_layers(plan)
    dropped_sub = any(not (layer.attn and layer.mlp) for layer in layers)
    heads = [c.num_attention_heads if layer.attn else 0 for layer in layers]
    kv = [c.num_key_value_heads if layer.attn else 0 for layer in layers]
    ffn = [c.intermediate_size if layer.mlp else ZERO_FFN for layer in layers]
    dummy = bool(heads) and heads[0] == 0
    if dummy:
        heads, kv, ffn = [c.num_attention_heads, *heads], [0, *kv], [0, *ffn]
    return GgufLayout("deci" if dropped_sub else "llama", heads, kv, ffn, dummy), layers


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    dtype: str = "f32",
    tokenizer_pre: str = "default",
    name: str | None = None,
) -> GgufLayout:
    """Write `model` (pruned or not) with its tokenizer, chat template and plan to `path`, atomically.

    `tokenizer_pre` is llama.cpp's name of the tokenizer's pre-tokenizer (`tokenizer.ggml.pre`: SmolLM2
    "smollm", Llama-3 "llama-bpe"); llama.cpp cannot infer it and tokenizes wrongly with the wrong one.
    """
    if dtype not in DTYPES:
        raise ExportError(f"dtype={dtype!r} is not valid: one of {DTYPES}. Fix: dtype=f16")
    shape, layers = layout(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        written = "f32" if dtype in QUANTIZED else dtype
        _write(model, tokenizer, Path(tmp), shape, layers, written, tokenizer_pre, name)
        if dtype in QUANTIZED:
            quantized = Path(tmp).with_suffix(".q")
            try:
                quantize(Path(tmp), quantized, dtype)
                os.replace(quantized, tmp)
            finally:
                quantized.unlink(missing_ok=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return shape


def quantize(src: Path, dst: Path, dtype: str) -> None:
    """llama.cpp's own quantizer (k-quants included, which the `gguf` package cannot write)."""
    from whatmatters.export.llamacpp import require

    llama_cpp = require()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANTIZED[dtype])
    params.nthread = max(1, min(4, os.cpu_count() or 1))
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to {dtype}")


def _write(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    shape: GgufLayout,
    layers: list[ExportLayer],
    dtype: str,
    tokenizer_pre: str,
    name: str | None,
) -> None:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(path, shape.arch)
    writer.add_name(name or getattr(c, "_name_or_path", "") or "pruned model")
    writer.add_file_type(int(FILE_TYPES[dtype]))
    writer.add_block_count(len(shape.head_count))
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    if shape.arch == "deci":
        writer.add_feed_forward_length(shape.feed_forward_length)
        writer.add_head_count(shape.head_count)
        writer.add_head_count_kv(shape.head_count_kv)
    else:
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)  # llama.cpp requires n_rot == head size for llama/deci
    writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_vocab_size(c.vocab_size)
    writer.add_string(PLAN_KEY, json.dumps(model_plan(model).to_dict()))
    _add_tokenizer(writer, tokenizer, c.vocab_size, tokenizer_pre)
    for tensor_name, array in _tensors(model, shape, layers, head_dim):
        _add_tensor(writer, tensor_name, array, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensors(model: PreTrainedModel, shape: GgufLayout, layers: list[ExportLayer], head_dim: int):
    """(GGUF name, float32 array in the HF [out, in] layout) for every tensor llama.cpp expects, in order."""
    c = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, len(shape.head_count))
    hidden = c.hidden_size

    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    yield "token_embd.weight", array(model.get_input_embeddings().weight)
    offset = int(shape.dummy_first)
    if shape.dummy_first:
        yield "blk.0.attn_norm.weight", np.ones(hidden, np.float32)
        yield "blk.0.attn_output.weight", np.zeros((hidden, hidden), np.float32)
    hf_layers = adapter_for(model).layers(model)
    for j, layer in enumerate(layers, start=offset):
        for rel, param in hf_layers[layer.position].named_parameters():
            gguf_name = names.get_name(f"model.layers.{j}.{rel}", try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"No GGUF name for layer parameter {rel!r}: not a Llama-layout layer")
            w = array(param)
            if rel.endswith(("q_proj.weight", "k_proj.weight")):
                heads = c.num_attention_heads if "q_proj" in rel else c.num_key_value_heads
                w = _rope_permute(w, heads)
            yield gguf_name, w
        if not layer.mlp:  # the zero FFN that stands in for a dropped MLP (see the module docstring)
            yield f"blk.{j}.ffn_norm.weight", np.ones(hidden, np.float32)
            yield f"blk.{j}.ffn_gate.weight", np.zeros((ZERO_FFN, hidden), np.float32)
            yield f"blk.{j}.ffn_up.weight", np.zeros((ZERO_FFN, hidden), np.float32)
            yield f"blk.{j}.ffn_down.weight", np.zeros((hidden, ZERO_FFN), np.float32)
    yield "output_norm.weight", array(model.model.norm.weight)
    if not c.tie_word_embeddings:  # llama.cpp reuses token_embd when output.weight is absent
        yield "output.weight", array(model.get_output_embeddings().weight)


def _rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotary layout (halves) -> llama.cpp's (adjacent pairs) for q/k rows, as llama.cpp's converter."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_tensor(writer: gguf.GGUFWriter, name: str, w: np.ndarray, dtype: str) -> None:
    qtype = WRITTEN[dtype] if w.ndim > 1 else gguf.GGMLQuantizationType.F32
    data = gguf.quants.quantize(np.ascontiguousarray(w), qtype)
    writer.add_tensor(name, data, raw_dtype=qtype)


def _add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, pre: str
) -> None:
    """A byte-level BPE tokenizer (GPT-2 style) as llama.cpp reads it; merges, special ids and chat template
    through gguf-py's `SpecialVocab`, token types from the tokenizer's special-token flags."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if backend.get("type") != "BPE" or backend.get("byte_fallback"):
        raise ExportError(
            f"The tokenizer is {backend.get('type')!r} (byte_fallback={backend.get('byte_fallback')}); this "
            "exporter writes byte-level BPE tokenizers only (SmolLM2, Llama-3). Fix: export a "
            "model with a byte-level BPE tokenizer, or convert this one with llama.cpp's convert_hf_to_gguf."
        )
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # rows of the embedding no token uses
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(
                gguf.TokenType.NORMAL
                if i not in added
                else gguf.TokenType.CONTROL
                if added[i].special
                else gguf.TokenType.USER_DEFINED
            )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # What the tokenizer does, not what its config claims: does encoding a word start with BOS?
    bos = tokenizer.bos_token_id
    special.add_special_token["bos"] = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    special.add_to_gguf(writer, quiet=True)
    writer.add_add_space_prefix(False)
