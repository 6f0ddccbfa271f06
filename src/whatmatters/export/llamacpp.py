"""llama.cpp through its Python binding (`llama-cpp-python`, the `serve` extra): load an exported GGUF, get
next-token log-probabilities per position, read the KV cache size it allocated.

`flash_attn=True` by default: without flash attention llama.cpp pads every layer's V cache to the widest
layer, so an attention-free layer would still hold V (measured: Attn-8 keeps 9.75 of 11.25 MiB instead of
22/30 of it). The binding is imported lazily, so everything else in `whatmatters.export` works without it.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

SETUP_HINT = "run `make setup-serve` (builds llama-cpp-python==0.3.36 from source, ~11 min on 2 cores)"
# llama.cpp's line at context creation: "llama_kv_cache: size =   11.25 MiB (  512 cells,  30 layers, ...".
KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")


def require() -> ModuleType:
    """The `llama_cpp` module, or an ImportError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as err:
        raise ImportError(f"llama.cpp's Python binding is not installed: {SETUP_HINT}") from err
    return llama_cpp


class LlamaLog:
    """Collects llama.cpp's log lines (they carry the KV cache size); installed before a model loads."""

    def __init__(self) -> None:
        llama_cpp = require()
        self.lines: list[str] = []

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            self.lines.append(text.decode(errors="replace"))

        self._callback = callback  # keep a reference: llama.cpp calls it for the life of the process
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    def kv_cache_mib(self) -> float | None:
        """The last KV cache size llama.cpp reported (0.01 MiB resolution)."""
        found = KV_LINE.findall("".join(self.lines))
        return float(found[-1][0]) if found else None


KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type of the cache: llama.cpp's default is f16


def load(
    path: str | Path,
    n_ctx: int = 512,
    n_threads: int = 1,
    flash_attn: bool = True,
    logits_all: bool = True,
    kv_type: str = "f16",
):
    """A `llama_cpp.Llama` on `path` (CPU, quiet); `logits_all` keeps every position's logits. An f32 KV cache
    (`kv_type`) takes llama.cpp's f16 rounding of K and V out of an equivalence check (~1e-2 in log p)."""
    llama_cpp = require()
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        logits_all=logits_all,
        flash_attn=flash_attn,
        type_k=KV_TYPES[kv_type],
        type_v=KV_TYPES[kv_type],
        verbose=False,
    )


def next_token_logprobs(llm: Any, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float64 log-softmax; row t is the distribution of the token after ids[t]."""
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


# Eight short prompts of different kinds (facts, code, chat template, story, list, number series, Q&A): what
# the equivalence checks run through both engines.
PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived",
    "The three primary colors are red, yellow and",
    "Photosynthesis converts sunlight, water and carbon dioxide into",
    "1, 1, 2, 3, 5, 8, 13,",
    "Q: Which planet is known as the Red Planet?\nA:",
)


def agreement(
    llm: Any, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: tuple[str, ...] = PROMPTS
) -> tuple[float, float]:
    """llama.cpp (`llm`, loaded with logits_all) against the transformers `model` on the same token ids: the
    max |log p difference| over every position and the whole vocabulary, and the share of positions whose
    top-1 token agrees. Raises ValueError when llama.cpp tokenizes a prompt differently (a wrong
    `tokenizer.ggml.pre`), since then the two would not see the same input."""
    worst, agree, total = 0.0, 0, 0
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        theirs = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if theirs != ids:
            raise ValueError(f"llama.cpp tokenizes {prompt!r} as {theirs}, transformers as {ids}")
        ours = next_token_logprobs(llm, ids)
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([ids], device=model.device)).logits[0].double(), -1)
        ref = ref.cpu().numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
        agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        total += len(ids)
    return worst, agree / total
