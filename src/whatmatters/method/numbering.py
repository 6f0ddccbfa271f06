"""Original layer numbers of a model that surgery may have pruned: every score, plan and table speaks in the
original model's layer numbers, so a pruned model's values are re-indexed through its recorded plan."""

from __future__ import annotations

from torch import nn

from whatmatters.adapters import adapter_for
from whatmatters.method.score_data import SCORE_KINDS


def kept_layers(model: nn.Module) -> tuple[list[int], int]:
    """Original index of each decoder layer of `model`, and the original layer count.

    A model pruned by surgery records its plan (original numbering) in `config.drop_plan`.
    """
    plan = getattr(model.config, "drop_plan", None)
    if plan is None:
        n = len(adapter_for(model).layers(model))
        return list(range(n)), n
    return [i for i in range(plan["num_layers"]) if i not in plan["blocks"]], plan["num_layers"]


def in_original_numbering(model: nn.Module, raw: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per-kind values indexed by `model`'s current layers, re-indexed by the original layer numbers (a pruned
    model's plan says which), NaN for removed blocks: every score of a model lines up with its original's."""
    kept, total = kept_layers(model)
    out = {}
    for kind in SCORE_KINDS:
        out[kind] = [float("nan")] * total
        for pos, layer in enumerate(kept):
            out[kind][layer] = raw[kind][pos]
    return out
