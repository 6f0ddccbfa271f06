"""Why attention is redundant: the measures of the paper's TMLR analyses, over a model and token batches.

Every function takes a stock model of a supported family (hooks go through `whatmatters.adapters`, the
forward runs unchanged) and token ids [B, T] without padding (calibration chunks), and returns tensors
indexed by layer:

* `attention_maps`, `attention_entropy`, `sink_share`: where each query's attention goes; deep layers
  that put most of it on the first token (the "sink") mix little information across tokens;
* `residual_streams`, `token_similarity`, `over_smoothing`: how alike the token states are around
  each branch; when they are nearly identical, attention (a weighted mean of them) has little to add;
* `relative_magnitude`: ||f(X)|| / ||X|| of each branch's output against the residual stream X it is
  added to; a small ratio means the branch barely moves the stream (the cause of a low 1 - cos score);
* `drop_effects`: KL divergence and top-1 agreement of next-token distributions when one branch is
  dropped (`branch_zeroed`, a reversible hook equivalent to `surgery.apply_plan`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from whatmatters.adapters import KINDS, Kind, adapter_for


def _check_ids(input_ids: Tensor) -> None:
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"input_ids must be a non-empty [B, T] tensor, got shape {tuple(input_ids.shape)}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# Attention maps
# ---------------------------------------------------------------------------------------------
@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run `model` with eager attention (the only kind that returns its weights), then restore the old one."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


@torch.no_grad()
def attention_maps(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Attention weights of every layer and head, float32 on the CPU: (L, B, H, T, T), rows sum to 1."""
    _check_ids(input_ids)
    with eager_attention(model):
        out = model(input_ids=input_ids.to(_device(model)), output_attentions=True, use_cache=False)
    return torch.stack([a.float().cpu() for a in out.attentions])


def attention_entropy(maps: Tensor) -> Tensor:
    """Mean entropy (nats) of each head's attention rows: (L, B, H, T, T) -> (L, H).

    The first query is left out: causal masking leaves it only itself to attend to (entropy 0).
    """
    p = maps[..., 1:, :]
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)  # (L, B, H, T-1); 0 log 0 = 0
    return entropy.mean(dim=(1, 3))


def sink_share(maps: Tensor) -> Tensor:
    """Mean share of each head's attention on the first token: (L, B, H, T, T) -> (L, H).

    The first query is left out, as in `attention_entropy`: its share is 1 by construction.
    """
    return maps[..., 1:, 0].mean(dim=(1, 3))


# ---------------------------------------------------------------------------------------------
# The residual stream around every branch
# ---------------------------------------------------------------------------------------------
@dataclass
class Streams:
    """The residual stream entering each branch and what the branch adds, float32 on the CPU, (L, B, T, D).

    X is what `scores.py` calls X: the stream entering the branch's pre-norm, before the norm.
    """

    attn_in: Tensor
    attn_out: Tensor
    mlp_in: Tensor
    mlp_out: Tensor

    @property
    def layer_out(self) -> Tensor:
        """Each decoder layer's output (the next layer's input; the last one before the final norm)."""
        return self.mlp_in + self.mlp_out


def _keep_input(store: dict, key: tuple[str, int], module: nn.Module, args: tuple) -> None:
    store[key] = args[0].detach().float().cpu()


def _keep_output(store: dict, key: tuple[str, int], module: nn.Module, args: tuple, output) -> None:
    out = output[0] if isinstance(output, tuple) else output
    # A branch dropped by surgery returns a 0-dim zero; broadcast it to the stream's shape.
    store[key] = out.detach().float().cpu().expand(store[(key[0].replace("_out", "_in"), key[1])].shape)


@torch.no_grad()
def residual_streams(model: nn.Module, input_ids: Tensor) -> Streams:
    """One forward pass with hooks on every branch's pre-norm (its input X) and output (what it adds).

    Memory: 4 x L x B x T x hidden floats, so keep B x T small (a few thousand tokens).
    """
    _check_ids(input_ids)
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    store: dict[tuple[str, int], Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        for kind in KINDS:
            branch = adapter.branch(kind)
            entry, exit_ = layer.get_submodule(branch.norm), layer.get_submodule(branch.output)
            handles.append(entry.register_forward_pre_hook(partial(_keep_input, store, (f"{kind}_in", i))))
            handles.append(exit_.register_forward_hook(partial(_keep_output, store, (f"{kind}_out", i))))
    try:
        model(input_ids=input_ids.to(_device(model)), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    names = ("attn_in", "attn_out", "mlp_in", "mlp_out")
    return Streams(**{name: torch.stack([store[(name, i)] for i in range(len(layers))]) for name in names})


def relative_magnitude(streams: Streams) -> dict[Kind, Tensor]:
    """||f(X)|| / ||X|| of each branch per layer and token position, averaged over the batch: (L, T).

    Average over positions (`.nanmean(-1)`) for one number per layer. Where ||X|| = 0 the ratio is
    undefined and left out (NaN): a randomly initialised model zeroes the padding token's embedding,
    and the EOS that separates calibration documents can be that token.
    """
    pairs = {"attn": (streams.attn_in, streams.attn_out), "mlp": (streams.mlp_in, streams.mlp_out)}
    out = {}
    for kind, (x, f) in pairs.items():
        x_norm = x.norm(dim=-1)
        ratio = f.norm(dim=-1) / x_norm.where(x_norm > 0, torch.nan)
        out[kind] = ratio.nanmean(dim=1)  # (L, B, T) -> (L, T)
    return out


def token_similarity(hidden: Tensor, skip: int = 1) -> Tensor:
    """Mean cosine similarity over all pairs of distinct token states of a sequence: (..., B, T, D) -> (...).

    Averaged over the batch. The first `skip` tokens are left out: the first token is the attention
    sink, whose state (huge norm, own direction) would otherwise weigh on every pair it is in.
    """
    u = F.normalize(hidden[..., skip:, :].float(), dim=-1)
    t = u.shape[-2]
    if t < 2:
        raise ValueError(f"token_similarity needs at least 2 tokens after skipping {skip}, got {t}")
    # sum over i != j of u_i . u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2 (a zero state stays zero: cosine 0)
    pairs = u.sum(-2).pow(2).sum(-1) - u.pow(2).sum(dim=(-2, -1))
    return (pairs / (t * (t - 1))).mean(-1)


def over_smoothing(streams: Streams, skip: int = 1) -> dict[str, Tensor]:
    """Mean pairwise token cosine entering each branch and leaving the layer, and each branch's change (L,).

    `attn_change` (`mlp_change`) > 0 means that branch makes the tokens more alike.
    """
    before_attn = token_similarity(streams.attn_in, skip)
    before_mlp = token_similarity(streams.mlp_in, skip)
    after = token_similarity(streams.layer_out, skip)
    return {
        "attn_in": before_attn,
        "mlp_in": before_mlp,
        "layer_out": after,
        "attn_change": before_mlp - before_attn,
        "mlp_change": after - before_mlp,
    }


# ---------------------------------------------------------------------------------------------
# What dropping one branch does to the output
# ---------------------------------------------------------------------------------------------
def _zero_output(module: nn.Module, args: tuple, output):
    if isinstance(output, tuple):  # attention returns (output, weights)
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


@contextmanager
def branch_zeroed(model: nn.Module, kind: Kind, layer: int) -> Iterator[None]:
    """Make one branch add nothing (h = X, as `surgery.apply_plan` drops it) until the block exits.

    The model is not changed: the hook is removed on exit, so a sweep over layers needs no copies.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer={layer} is out of range: the model has layers 0..{len(layers) - 1}")
    handle = layers[layer].get_submodule(adapter.branch(kind).output).register_forward_hook(_zero_output)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def logits(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Next-token logits, float32 on the CPU: (B, T, V)."""
    return model(input_ids=input_ids.to(_device(model)), use_cache=False).logits.float().cpu()


def token_divergence(reference: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
    """Per position: KL(P_reference || P_other) in nats, and whether the top-1 tokens agree; (B, T) each."""
    p, q = F.log_softmax(reference.float(), dim=-1), F.log_softmax(other.float(), dim=-1)
    kl = F.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    return kl, reference.argmax(-1) == other.argmax(-1)


def next_token_divergence(reference: Tensor, other: Tensor) -> tuple[float, float]:
    """Mean KL(P_reference || P_other) in nats over all positions, and the share with the same top-1 token."""
    kl, agree = token_divergence(reference, other)
    return kl.mean().item(), agree.float().mean().item()


@torch.no_grad()
def fidelity(
    original: nn.Module, pruned: nn.Module, input_ids: Tensor, batch_size: int = 8
) -> dict[str, list[float]]:
    """How closely `pruned` follows `original` on held-out text, per sequence (the unit a paired interval
    resamples): each model's summed next-token NLL, the tokens predicted, the mean KL(original || pruned)
    over positions and the share of positions whose top-1 token agrees. One forward pass of each model."""
    _check_ids(input_ids)
    out: dict[str, list[float]] = {"nll": [], "nll_original": [], "tokens": [], "kl": [], "top1": []}
    for batch in input_ids.split(batch_size):
        reference = logits(original, batch)[:, :-1]  # (B, T-1, V): the last position predicts nothing here
        other = reference if pruned is original else logits(pruned, batch)[:, :-1]
        targets = batch[:, 1:]
        for key, values in (("nll_original", reference), ("nll", other)):
            nll = F.cross_entropy(values.flatten(0, 1), targets.flatten(), reduction="none")
            out[key] += nll.view(targets.shape).double().sum(1).tolist()
        kl, agree = token_divergence(reference, other)
        out["tokens"] += [float(targets.shape[1])] * len(batch)
        out["kl"] += kl.double().mean(1).tolist()
        out["top1"] += agree.double().mean(1).tolist()
    return out


@torch.no_grad()
def drop_effects(
    model: nn.Module,
    input_ids: Tensor,
    kind: Kind,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """For each layer, drop its `kind` branch alone and compare next-token distributions to the full model.

    Returns {"layer": [...], "kl": [...], "top1": [...]}: one forward pass per layer, plus one reference.
    """
    _check_ids(input_ids)
    chosen = list(range(len(adapter_for(model).layers(model)))) if layers is None else list(layers)
    reference = logits(model, input_ids)
    out: dict[str, list[float]] = {"layer": chosen, "kl": [], "top1": []}
    for i in tqdm(chosen, desc=f"dropping each {kind}", disable=not progress):
        with branch_zeroed(model, kind, i):
            kl, top1 = next_token_divergence(reference, logits(model, input_ids))
        out["kl"].append(kl)
        out["top1"].append(top1)
    return out
