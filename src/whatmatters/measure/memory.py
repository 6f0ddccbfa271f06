"""What a generation job holds in memory: KV cache (measured and analytic), weights, activations, peak.

Checked before a job runs (`ensure_fits`: a job that cannot fit fails in seconds, not after minutes of
loading), measured while it runs (peak), and the paper's Table 4 arithmetic (KV cache of its models with
and without half their attention layers) from their configs, beside the paper's figures.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, get_layer_types_and_kwargs

from whatmatters import models, shapes
from whatmatters.paper import TABLE4

if TYPE_CHECKING:
    from whatmatters.measure.job import Job

GiB = 2**30


# ---------------------------------------------------------------------------------------------
# KV cache: measured and analytic
# ---------------------------------------------------------------------------------------------
def measured_cache(cache: Cache) -> tuple[int, int]:
    """(bytes of every key and value tensor, number of cache layers) of a cache after `generate`.

    Bytes are numel x element size of what each layer holds. A sliding layer's tensors are views into the
    last step's concatenation, whose storage keeps one token more (the one that slid out); that is a detail
    of the transformers implementation, not cache the model needs, so it is not counted.
    """
    size = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return size, len(cache.layers)


def kv_layer_bytes(config: PreTrainedConfig, batch_size: int, seq_len: int, dtype: str) -> list[int]:
    """Analytic bytes of each KV-cache layer holding `seq_len` tokens: 2 x B x KV heads x head dim x tokens.

    The layers are those the model's caches get (`get_text_config(decoder=True)`: for a pruned model, one
    per kept attention). A full-attention layer holds every token. A sliding-window layer of window W holds
    min(seq_len, W - 1): the current token completes the window, so transformers' `DynamicSlidingWindowLayer`
    (what `generate` uses) keeps only the last W - 1 between steps; a static cache would hold W. With P + G
    beyond the window, dropping a sliding attention therefore saves less cache than dropping a full one.
    """
    text = config.get_text_config(decoder=True)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    per_token = 2 * batch_size * kv_heads * head_dim * models.DTYPES[dtype].itemsize
    # transformers' own reading of the config decides which layers slide, so analytic and cache agree on it.
    _, layer_kwargs = get_layer_types_and_kwargs(text)
    sizes = []
    for kwargs in layer_kwargs:
        window = kwargs.get("sliding_window")
        sizes.append(per_token * (seq_len if window is None else min(seq_len, window - 1)))
    return sizes


def table4(seq_len: int = 2048, dtype: str = "float16") -> list[dict]:
    """Table 4 rows: analytic KV cache of each paper model, original, with half the attentions dropped and
    with the paper's kept count, next to the paper's own figures (in separate `paper_*` columns).

    Analytic GiB (2^30 bytes) reproduce the paper's "GB" exactly for Mistral-7B (16 -> 10 at 20 of 32
    layers), Llama-2-70B and Llama-3-70B (20 -> 10), and Llama-3-8B's 16. They disagree in two places:
    Llama-2-13B (40 KV heads, no GQA) is 50 GiB = 53.7 GB analytic, where the paper says 52 (and 25 GiB
    vs 26 at 20 layers), neither unit matching; Llama-3-8B's pruned 10 GB is 20 of 32 layers (Attn-12),
    not half (8 GiB). Every figure assumes seq_len tokens of every layer; none of these models slides
    within 2048 tokens (Mistral's window is 4096). The dropped half is the deepest half, as the paper's
    scores mostly pick; only the count matters where every layer holds the same cache.
    """
    rows = []
    for name, batch, layers, paper_kept, paper_gb, paper_pruned_gb in TABLE4:
        per_layer = kv_layer_bytes(shapes.config(name), batch, seq_len, dtype)
        assert len(per_layer) == layers, f"{name}: {len(per_layer)} cache layers, the paper says {layers}"
        half = range(layers - layers // 2, layers)
        at_paper_kept = None if paper_kept is None else _kept_gib(per_layer, range(paper_kept, layers))
        rows.append(
            {
                "model": name,
                "batch_size": batch,
                "seq_len": seq_len,
                "layers": layers,
                "analytic_gib": _kept_gib(per_layer, ()),
                "half_layers": layers - len(half),
                "analytic_half_gib": _kept_gib(per_layer, half),
                "analytic_paper_kept_gib": at_paper_kept,
                "paper_kept_layers": paper_kept,
                "paper_gb": paper_gb,
                "paper_pruned_gb": paper_pruned_gb,
            }
        )
    return rows


def _kept_gib(per_layer: list[int], dropped: Iterable[int]) -> float:
    dropped = set(dropped)
    return sum(size for i, size in enumerate(per_layer) if i not in dropped) / GiB


# ---------------------------------------------------------------------------------------------
# Before a job: estimate and check
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job needs on its device: weights, KV cache (P + G tokens) and a rough activation peak."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def weight_bytes(model: PreTrainedModel) -> int:
    """Bytes of the model's parameters and buffers (also on `meta`, where nothing is allocated)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def estimate_memory(model: PreTrainedModel, job: Job) -> MemoryEstimate:
    """Estimate what `job` needs on `model` (works on a `meta` model: nothing is allocated).

    Activations, roughly: the prefill dominates; one layer at a time is alive in inference, with about 6
    hidden-size tensors and 3 intermediate-size ones (gate, up, their product) per prompt token; eager
    attention adds the P x P scores and their softmax per head (sdpa kernels do not materialise them); and
    the last-token logits in the model dtype and in float32.
    """
    text = model.config.get_text_config(decoder=True)
    size = models.DTYPES[job.dtype].itemsize
    kv = sum(kv_layer_bytes(model.config, job.batch_size, job.prompt_len + job.new_tokens, job.dtype))
    tokens = job.batch_size * job.prompt_len
    activations = tokens * (6 * text.hidden_size + 3 * text.intermediate_size) * size
    if text._attn_implementation == "eager":
        activations += 2 * tokens * text.num_attention_heads * job.prompt_len * size
    activations += job.batch_size * text.vocab_size * (size + 4)
    return MemoryEstimate(weight_bytes(model), kv, activations)


def free_memory(device: str) -> int | None:
    """Bytes a new allocation can still get on `device`; None where we cannot tell."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        # Memory PyTorch reserved but does not use is free to this process too.
        return free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    if dev.type == "cpu":
        return psutil.virtual_memory().available  # psutil comes with accelerate
    return None


def fits(estimate: MemoryEstimate, device: str, resident: int = 0) -> bool:
    """Whether the job fits with `resident` bytes of the estimate already in place (True where unknown)."""
    free = free_memory(device)
    return free is None or estimate.total - resident <= free


def ensure_fits(estimate: MemoryEstimate, device: str, resident: int = 0) -> None:
    """Raise before a job that cannot fit: `resident` bytes of the estimate (loaded weights) are in place."""
    if not fits(estimate, device, resident):
        raise MemoryError(
            f"The job needs about {estimate.total / GiB:.2f} GiB on {device} (weights "
            f"{estimate.weights / GiB:.2f}, KV cache {estimate.kv_cache / GiB:.2f}, activations ~"
            f"{estimate.activations / GiB:.2f}; {resident / GiB:.2f} already loaded) but only "
            f"{free_memory(device) / GiB:.2f} GiB are free: lower speed.batch_size, prompt_len or new_tokens."
        )


def release(device: str) -> None:
    """Return a dropped model's memory before building the next one."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# While a job runs: peak memory
# ---------------------------------------------------------------------------------------------
def reset_peak(device: torch.device) -> bool:
    """Start a new peak-memory window; False where the peak cannot be reset (so must not be read)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    if device.type == "cpu":
        # Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM).
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True
    return False


def peak(device: torch.device) -> int:
    """Peak bytes since `reset_peak`: allocated by PyTorch on a GPU; on CPU (Linux) the process's peak
    resident set size, weights, Python and all: a best effort."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
