"""The loss criterion: how much the calibration loss rises when only one module is removed.

For every block, attention and MLP that still exists, its score is

    S = NLL(model without the module) - NLL(model)

with NLL the mean next-token negative log-likelihood over every non-padding calibration token. This
is what SLEB and BlockPruner measure (perplexity after removal) instead of the paper's 1 - cos(X, Y):
it asks the question directly, at the price of one partial forward pass per candidate. Lower = less
important, as for every criterion, so the same plans, tables and iterative drop apply.

Cost saving: removing a module of layer p leaves every layer below p unchanged, so one base pass
caches the residual stream entering each layer (`stream_cache.StreamCache`) and each candidate's pass runs
only layers >= p from that cached input. Scoring all three kinds costs about 1 + 3 L / 2 forward-pass
equivalents (`meta["forward_equivalents"]`), against cosine's 1; one kind (what an attention plan needs)
about 1 + L / 2. A removed branch is removed exactly
as surgery removes it: it adds zero to the stream (hidden = X).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from whatmatters.adapters import adapter_for
from whatmatters.method.analysis import branch_zeroed
from whatmatters.method.numbering import in_original_numbering, kept_layers
from whatmatters.method.score_data import SCORE_KINDS, Scores
from whatmatters.method.stream_cache import Skip, StreamCache, caching_inputs, from_layer


@contextlib.contextmanager
def _removed(model: nn.Module, position: int, kind: str) -> Iterator[None]:
    """`model` with the `kind` module of its `position`-th layer removed, for the duration of the block."""
    if kind != "block":
        with branch_zeroed(model, kind, position):  # adds nothing to the stream, as after surgery
            yield
        return
    layers = adapter_for(model).layers(model)
    layer, layers[position] = layers[position], Skip()
    try:
        yield
    finally:
        layers[position] = layer


@torch.no_grad()
def mean_nll(
    model: nn.Module,
    input_ids: Tensor,
    mask: Tensor,
    batch_size: int,
    batch: list[int] | None = None,
) -> float:
    """Mean next-token NLL (float64 sums) over every predicted non-padding token of the calibration data.

    `batch[0]` is set to the index of the batch in flight (what a restart hook reads).
    """
    batch = [0] if batch is None else batch
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for b, first in enumerate(range(0, len(input_ids), batch_size)):
        batch[0] = b
        ids = input_ids[first : first + batch_size].to(device)
        m = mask[first : first + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=m, use_cache=False).logits[:, :-1]  # (B, T-1, V)
        target = ids[:, 1:].masked_fill(~(m[:, 1:].bool() & m[:, :-1].bool()), -100)
        nll = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="sum")
        total += float(nll.double())
        count += int((target != -100).sum())
    return total / count


@torch.no_grad()
def loss_scores(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    batch_size: int = 1,
    progress: bool = True,
    start: int = 0,
    cache: StreamCache | None = None,
    kinds: tuple[str, ...] = SCORE_KINDS,
) -> Scores:
    """Loss increase of removing each block, attention and MLP of `model` alone (original layer numbering);
    only the modules of `kinds` are measured, the others are NaN.

    With a `cache` holding the inputs of layers <= `start` (an iterative drop after a cut at position
    `start`), the base pass re-runs only layers >= `start`; every candidate is re-measured (a cut changes
    what every candidate's removal does to the loss), each from its own layer on.
    """
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    cache = StreamCache() if cache is None else cache
    if start not in cache.inputs:
        start = 0  # nothing cached to restart from (or a fresh cache): full base pass
    restart = cache.inputs[start] if start > 0 else None
    cache.inputs = {i: v for i, v in cache.inputs.items() if i < start}
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    n = len(layers)
    batch = [0]
    with from_layer(model, start, restart, batch), caching_inputs(model, cache, start):
        base = mean_nll(model, input_ids, mask, batch_size, batch)
    cost = (n - start) / n
    nan = float("nan")
    raw = {kind: [nan] * n for kind in SCORE_KINDS}
    candidates = [
        (p, kind)
        for p in range(n)
        for kind in SCORE_KINDS
        if kind in kinds and (kind == "block" or adapter.has(layers[p], kind))
    ]
    for p, kind in tqdm(candidates, desc="loss scores", disable=not progress):
        # Removed first: a removed block's stand-in is what receives the cached stream.
        with _removed(model, p, kind), from_layer(model, p, cache.inputs[p] if p > 0 else None, batch):
            raw[kind][p] = mean_nll(model, input_ids, mask, batch_size, batch) - base
        cost += (n - p) / n
    scores = in_original_numbering(model, raw)
    meta = {
        "criterion": "loss",
        "kinds": list(kinds),
        "angular": None,
        "num_samples": int(input_ids.shape[0]),
        "seq_len": int(input_ids.shape[1]),
        "tokens": int(mask.sum()),
        "base_loss": base,
        "forward_equivalents": cost,
        "kept_layers": kept_layers(model)[0],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "model_type": model.config.model_type,
    }
    return Scores(**scores, meta=meta)
