"""Importance scores of every block, attention and MLP layer, all in one forward pass.

The paper's criterion, for a module with input X and output Y (per token, over the hidden dim):

    S = 1 - cos(X, Y)

For an attention or MLP branch, X is the residual stream entering it (before its norm) and
Y = X + branch(X); for a block, X and Y are the decoder layer's input and output. Scores are
averaged over every non-padding token of every calibration sample. Hooks capture X and the
branch output, so the stock forward runs unchanged and all three kinds come from one pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from whatmatters.adapters import KINDS, adapter_for
from whatmatters.method.criteria import (
    MODEL_CRITERIA,
    ORDER_CRITERIA,
    TOKEN_CRITERIA,
    TokenCriterion,
    cosine,
    criteria,
)
from whatmatters.method.loss_scores import loss_scores
from whatmatters.method.numbering import in_original_numbering, kept_layers
from whatmatters.method.score_data import SCORE_KINDS, Scores
from whatmatters.method.stream_cache import StreamCache, caching_inputs, from_layer, hidden_input

# Which tokens the angular distance averages: every non-padding token (`mean`), or only each sample's last
# token (`last_token`, Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers").
ANGULAR_TOKENS = ("mean", "last_token")


# ---------------------------------------------------------------------------------------------
# The one-pass scorer
# ---------------------------------------------------------------------------------------------
def _first(output: Tensor | tuple) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


class _Collector:
    """Hooks that accumulate per-layer score sums over the non-padding tokens of each batch."""

    def __init__(
        self,
        model: nn.Module,
        fn: TokenCriterion,
        angular: bool,
        start: int = 0,
        last_token: bool = False,
    ) -> None:
        adapter = adapter_for(model)
        self.layers = adapter.layers(model)
        n = len(self.layers)
        self.fn = fn
        self.sums = {k: torch.zeros(n, dtype=torch.float64) for k in SCORE_KINDS}
        self.tokens = 0
        self.angular = torch.zeros(n + 1, n + 1, dtype=torch.float64) if angular else None
        self.last_token = last_token  # angular distance of each sample's last token only (Gromov et al.)
        self.angular_count = 0  # tokens (or samples, for last_token) the angular sums run over
        self.mask: Tensor | None = None  # bool [B, T] of the batch in flight
        self._inputs: dict[tuple[str, int], Tensor] = {}
        self._streams: list[Tensor] = []  # normalised residual stream at each layer boundary
        self._handles = []
        self.hooked: set[tuple[str, int]] = set()
        for i, layer in enumerate(self.layers):
            if i < start:
                continue
            self._hook_pair(layer, layer, ("block", i))
            for kind in KINDS:
                if adapter.has(layer, kind):  # a dropped branch has no score: it is NaN, not 0
                    branch = adapter.branch(kind)
                    self._hook_pair(getattr(layer, branch.norm), getattr(layer, branch.output), (kind, i))
                    self.hooked.add((kind, i))

    def _tokens(self, h: Tensor) -> Tensor:
        # A model dispatched over devices runs each layer on its own device: the mask follows the stream.
        return h[self.mask.to(h.device)].float()  # (tokens, hidden), float32 whatever the model dtype

    def _stream(self, h: Tensor) -> Tensor:
        """Unit vectors of the stream the angular distance compares, all on the first layer's device."""
        if self.last_token:
            mask = self.mask.to(h.device)
            positions = torch.arange(mask.shape[1], device=h.device)
            last = (mask * positions).argmax(dim=1)  # each sample's last non-padding position
            tokens = h[torch.arange(h.shape[0], device=h.device), last].float()  # (B, hidden)
        else:
            tokens = self._tokens(h)
        unit = F.normalize(tokens, dim=-1)
        return unit.to(self._streams[0].device) if self._streams else unit

    def _hook_pair(self, entry: nn.Module, exit_: nn.Module, key: tuple[str, int]) -> None:
        kind, i = key

        def capture(module, args, kwargs):
            x = hidden_input(args, kwargs)
            self._inputs[key] = x
            if kind == "block" and self.angular is not None:
                self._streams.append(self._stream(x))

        def score(module, args, kwargs, output):
            x = self._tokens(self._inputs.pop(key))
            out = self._tokens(_first(output))
            # A branch hook sees the branch output f(X); a block hook sees the layer output Y itself.
            y = out if kind == "block" else x + out
            self.sums[kind][i] += self.fn(x, y).double().sum().cpu()
            if kind == "block" and self.angular is not None and i == len(self.layers) - 1:
                self._streams.append(self._stream(_first(output)))

        self._handles.append(entry.register_forward_pre_hook(capture, with_kwargs=True))
        self._handles.append(exit_.register_forward_hook(score, with_kwargs=True))

    def end_batch(self) -> None:
        self.tokens += int(self.mask.sum())
        if self.angular is not None:
            h = torch.stack(self._streams)  # (L+1, tokens, hidden) unit vectors; last_token: tokens = B
            self.angular_count += h.shape[1]
            cos = torch.einsum("itd,jtd->ijt", h, h).clamp(-1.0, 1.0)
            self.angular += (torch.arccos(cos) / math.pi).double().sum(-1).cpu()
            self._streams.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def result(self) -> dict:
        nan = float("nan")
        out = {k: (v / self.tokens).tolist() for k, v in self.sums.items()}
        for kind in KINDS:  # a dropped branch was never hooked: its score is missing, not zero
            out[kind] = [v if (kind, i) in self.hooked else nan for i, v in enumerate(out[kind])]
        out["angular"] = None if self.angular is None else (self.angular / self.angular_count).tolist()
        return out


@torch.no_grad()
def compute_scores(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    batch_size: int = 1,
    criterion: str = "cosine",
    angular: bool = True,
    seed: int = 0,
    progress: bool = True,
    start: int = 0,
    cache: StreamCache | None = None,
    angular_tokens: str = "mean",
    kinds: tuple[str, ...] = SCORE_KINDS,
) -> Scores:
    """Scores of every layer of `model` on calibration data `input_ids` [N, L] (one forward pass).

    `attention_mask` (1 = real token) excludes padding from the average. `angular` also records the
    consecutive-span angular distances (needs the residual stream of every layer per batch), over
    every token (`angular_tokens="mean"`) or each sample's last token (`"last_token"`, Gromov et al.).
    With a `cache`, the pass stores each layer's input there; with `start` > 0 it runs only layers
    >= start, from the cached input of layer `start` (scores of layers below are NaN: unchanged,
    the caller keeps its earlier ones). Cost: (layers run / layers) forward-pass equivalents.
    `kinds` limits what a removal criterion (loss) measures, one partial pass per module, to what a plan
    will choose among (the rest NaN); a one-pass criterion scores every kind at no extra cost.
    """
    if criterion not in criteria():
        raise ValueError(f"Unknown criterion {criterion!r}; choose one of {criteria()}")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"input_ids must be a non-empty [N, L] tensor, got shape {tuple(input_ids.shape)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if angular_tokens not in ANGULAR_TOKENS:
        raise ValueError(f"Unknown angular_tokens {angular_tokens!r}; choose one of {ANGULAR_TOKENS}")
    if criterion in MODEL_CRITERIA:
        return loss_scores(model, input_ids, attention_mask, batch_size, progress, start, cache, kinds)
    if start > 0 and (angular or cache is None or start not in cache.inputs):
        raise ValueError("start > 0 needs a StreamCache holding that layer's inputs, and angular=False")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    restart = cache.inputs[start] if start > 0 else None
    if cache is not None:  # inputs below `start` stay valid; this pass refills the rest
        cache.inputs = {i: v for i, v in cache.inputs.items() if i < start}
    # Order criteria ignore the data, but the pass still records the data's cosine scores and
    # which modules exist, so their result has the same shape (NaN for dropped modules).
    fn = TOKEN_CRITERIA.get(criterion, cosine)
    last_token = angular_tokens == "last_token"
    collector = _Collector(model, fn, angular, start, last_token=last_token)
    layers = collector.layers
    device = next(model.parameters()).device
    batch = [0]
    try:
        with from_layer(model, start, restart, batch), caching_inputs(model, cache, start):
            batches = range(0, len(input_ids), batch_size)
            for b, first in enumerate(tqdm(batches, desc="scoring", disable=not progress)):
                batch[0] = b  # which batch's cached stream `from_layer` injects
                ids, m = input_ids[first : first + batch_size], mask[first : first + batch_size]
                collector.mask = m.bool().to(device)
                model(input_ids=ids.to(device), attention_mask=m.to(device), use_cache=False)
                collector.end_batch()
    finally:
        collector.remove()
    result = collector.result()
    # Layers below `start` did not run: their scores come from the caller.
    result |= {kind: [float("nan")] * start + result[kind][start:] for kind in SCORE_KINDS}
    raw = {"angular": result["angular"], **in_original_numbering(model, result)}
    kept = kept_layers(model)[0]
    if criterion in ORDER_CRITERIA:
        order = ORDER_CRITERIA[criterion]
        for offset, kind in enumerate(SCORE_KINDS):  # distinct seeds: kinds must not tie in a joint ranking
            ranks = order(len(raw[kind]), seed + offset)
            raw[kind] = [r if not math.isnan(v) else v for r, v in zip(ranks, raw[kind], strict=True)]
    meta = {
        "criterion": criterion,
        "angular": angular_tokens if angular else None,
        "num_samples": int(input_ids.shape[0]),
        "seq_len": int(input_ids.shape[1]),
        "tokens": collector.tokens,
        "forward_equivalents": (len(layers) - start) / len(layers),
        "kept_layers": kept,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "model_type": model.config.model_type,
    }
    return Scores(**raw, meta=meta)
