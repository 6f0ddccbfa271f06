"""Budgeted drop: instead of a count n, a target speedup, KV-cache size or parameter count.

A budget is `method.budget = {kind, target}`:

    speedup   predicted speedup >= target (> 1), from the per-module time profile of the original
              (`timing.profile`): 1 / (1 - removed time share), the same ideal speedup the runs report;
    kv_bytes  KV cache kept <= target (a fraction in (0, 1)) of the original's, analytic per attention layer;
    params    parameters kept <= target (a fraction in (0, 1)) of the original's, counted per module.

Rule (stated, deterministic): candidates are the attention and/or MLP modules of the method's target
(attn, mlp or joint) that cost something in the budget's unit; they are taken in increasing order of
importance score per unit cost (ties by kind, layer) until the removed cost meets the budget; then every
taken module whose removal is no longer needed is given back, most important first. The plan records
the budget, the rule and the predicted value; the run's record holds the measured one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from whatmatters.adapters import KINDS, adapter_for
from whatmatters.measure.ideal import Profile
from whatmatters.measure.job import Job
from whatmatters.measure.memory import kv_layer_bytes
from whatmatters.measure.timing import profile
from whatmatters.method.plans import Plan, target_kinds
from whatmatters.method.score_data import Scores

BUDGET_KINDS = ("speedup", "kv_bytes", "params")
BUDGET_TARGETS = ("attn", "mlp", "joint")  # a budget chooses among sub-layers, not whole blocks
RULE = "greedy: lowest score per unit cost until the budget is met, then give back what is not needed"


@dataclass(frozen=True)
class Budget:
    kind: str
    target: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ValueError(
                f"method.budget.kind={self.kind!r} is not valid: one of {BUDGET_KINDS}. "
                "Fix: method.budget.kind=speedup"
            )
        if self.kind == "speedup" and not self.target > 1:
            raise ValueError(
                f"method.budget.target={self.target} is not valid for speedup: a number > 1. "
                "Fix: method.budget.target=1.2"
            )
        if self.kind != "speedup" and not 0 < self.target < 1:
            raise ValueError(
                f"method.budget.target={self.target} is not valid for {self.kind}: the fraction kept, "
                "in (0, 1). Fix: method.budget.target=0.8"
            )


@dataclass(frozen=True)
class CostProfile:
    """What each attention / MLP of the original costs in one budget unit, and the whole model's total."""

    unit: str  # seconds, bytes or parameters
    attn: tuple[float, ...]
    mlp: tuple[float, ...]
    total: float

    def removed(self, chosen: list[tuple[str, int]]) -> float:
        return sum(getattr(self, kind)[i] for kind, i in chosen)


def time_costs(prof: Profile) -> CostProfile:
    """Seconds of one `generate` call spent in each branch (what a drop removes), from `timing.profile`."""
    return CostProfile("seconds", tuple(prof.attn_s), tuple(prof.mlp_s), prof.total_s)


def kv_costs(model: nn.Module, batch_size: int, seq_len: int, dtype: str) -> CostProfile:
    """KV-cache bytes each attention holds at B x seq_len tokens (an MLP holds none)."""
    sizes = kv_layer_bytes(model.config, batch_size, seq_len, dtype)
    return CostProfile("bytes", tuple(float(s) for s in sizes), (0.0,) * len(sizes), float(sum(sizes)))


def param_costs(model: nn.Module) -> CostProfile:
    """Parameters each branch owns (its module and norms: what surgery deletes), and the model's total."""
    adapter = adapter_for(model)
    costs = {}
    for kind in KINDS:
        owned = adapter.branch(kind).owned
        costs[kind] = tuple(
            float(sum(p.numel() for name in owned for p in getattr(layer, name).parameters()))
            for layer in adapter.layers(model)
        )
    return CostProfile("parameters", costs["attn"], costs["mlp"], float(model.num_parameters()))


def predicted(budget: Budget, costs: CostProfile, chosen: list[tuple[str, int]]) -> float:
    """The budget's quantity after removing `chosen`: speedup, or the fraction of KV bytes / params kept."""
    left = costs.total - costs.removed(chosen)
    return costs.total / left if budget.kind == "speedup" else left / costs.total


def _met(budget: Budget, value: float) -> bool:
    return value >= budget.target if budget.kind == "speedup" else value <= budget.target


def budget_plan(scores: Scores, budget: Budget, costs: CostProfile, target: str = "joint") -> Plan:
    """The plan that meets `budget` on `costs` by the rule above; an error when no plan of `target` can."""
    if target not in BUDGET_TARGETS:
        raise ValueError(f"method.target={target!r} cannot take a budget: one of {BUDGET_TARGETS}")
    if len(costs.attn) != scores.num_layers:
        raise ValueError(f"The cost profile has {len(costs.attn)} layers, the scores {scores.num_layers}")
    kinds = target_kinds(target)
    candidates = {
        (kind, i): getattr(scores, kind)[i] / getattr(costs, kind)[i]
        for kind in kinds
        for i in range(scores.num_layers)
        if not math.isnan(getattr(scores, kind)[i]) and getattr(costs, kind)[i] > 0
    }
    chosen: list[tuple[str, int]] = []
    for key in sorted(candidates, key=lambda k: (candidates[k], k)):
        if _met(budget, predicted(budget, costs, chosen)):
            break
        chosen.append(key)
    value = predicted(budget, costs, chosen)
    if not _met(budget, value):
        raise ValueError(
            f"method.budget {budget.kind}={budget.target} is out of reach for target {target}: dropping "
            f"every candidate gives {value:.4g}. Fix: a looser budget.target, or method.target=joint"
        )
    for key in sorted(chosen, key=lambda k: (-getattr(scores, k[0])[k[1]], k)):  # most important first
        rest = [k for k in chosen if k != key]
        if _met(budget, predicted(budget, costs, rest)):
            chosen = rest
    meta = {
        "target": target,
        "mode": "one_shot",
        "n": len(chosen),
        "criterion": scores.meta.get("criterion"),
        "budget": {"kind": budget.kind, "target": budget.target},
        "rule": RULE,
        "predicted": predicted(budget, costs, chosen),
        "cost_unit": costs.unit,
    }
    picked = {kind: [i for k, i in chosen if k == kind] for kind in KINDS}
    return Plan(scores.num_layers, attn=picked["attn"], mlp=picked["mlp"], meta=meta)


def costs_for(kind: str, model: nn.Module, job: Job) -> CostProfile:
    """The cost profile of the (original) `model` a `kind` budget needs, on the run's speed job."""
    if kind == "speedup":
        return time_costs(profile(model, job))
    if kind == "kv_bytes":
        return kv_costs(model, job.batch_size, job.prompt_len + job.new_tokens, job.dtype)
    return param_costs(model)
