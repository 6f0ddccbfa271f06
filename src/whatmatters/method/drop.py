"""Dropping: scores -> plan -> surgery, one-shot or iterative.

One-shot scores the model once and drops the n lowest modules. Iterative drops the lowest one,
re-scores the *pruned* model, and repeats. Re-scoring after a drop at layer l only re-runs layers
>= l: everything below is unchanged, so their scores and the stream entering layer l are reused
(`StreamCache`). The cost of a run is counted in forward-pass equivalents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor
from transformers import PreTrainedModel

from whatmatters.method.numbering import kept_layers
from whatmatters.method.plans import MethodSpec, Plan, drop_count, make_plan, target_kinds
from whatmatters.method.scores import MODEL_CRITERIA, SCORE_KINDS, Scores, StreamCache, compute_scores
from whatmatters.method.surgery import apply_plan

MODES = ("one_shot", "iterative")
PLAN_FIELDS = {"attn": "attn", "mlp": "mlp", "block": "blocks"}  # score kind -> Plan field


@dataclass
class DropResult:
    plan: Plan
    scores: Scores  # of the original model: what the first (one-shot: every) choice was made from
    steps: list[dict] = field(default_factory=list)  # iterative: what each step dropped and at what score
    forward_equivalents: float = 1.0


def check_scores_fit(scores: Scores, model: PreTrainedModel) -> None:
    """Reused scores must come from a model with the same layers (e.g. not a scores.json of another model)."""
    kept, total = kept_layers(model)
    if scores.num_layers != total:
        raise ValueError(
            f"The scores have {scores.num_layers} layers but the model has {total}: they were computed "
            "for another model; re-score this one (drop scores.path)"
        )


def one_shot_drop(model: PreTrainedModel, scores: Scores, spec: MethodSpec) -> DropResult:
    """Drop what `spec` asks for (the n lowest-scored modules of its target) from `model`, in place."""
    check_scores_fit(scores, model)
    plan = make_plan(scores, spec.target, **spec.amount(), consecutive=spec.consecutive)
    done = getattr(model.config, "drop_plan", None)
    if done is not None:  # an already pruned model: the new cuts come on top of its own
        plan = _combine(Plan.from_dict(done), plan)
    apply_plan(model, plan)
    return DropResult(plan, scores, forward_equivalents=scores.meta.get("forward_equivalents", 1.0))


def iterative_drop(
    model: PreTrainedModel,
    input_ids: Tensor,
    target: str,
    n: int | None = None,
    ratio: float | None = None,
    criterion: str = "cosine",
    batch_size: int = 1,
    reuse: bool = True,
    remove_residual: bool = False,
    progress: bool = True,
) -> DropResult:
    """Drop one module at a time from `model` (in place), re-scoring the pruned model after each.

    A layer whose attention alone is dropped still runs (and scores) its MLP. With `reuse`, each
    re-score starts at the changed layer from its cached input (memory: one hidden state per layer
    and calibration token, on the CPU); without it, every re-score is a full pass.
    """
    num_layers = kept_layers(model)[1]
    count = drop_count(target, num_layers, n, ratio)
    cache = StreamCache() if reuse else None
    score_args = dict(
        criterion=criterion,
        batch_size=batch_size,
        angular=False,
        progress=progress,
        kinds=target_kinds(target),
    )
    first = scores = compute_scores(model, input_ids, cache=cache, **score_args)
    cost = 1.0
    plan = Plan(num_layers, remove_residual=remove_residual, meta={"target": target, "mode": "iterative"})
    steps = []
    for step in range(count):
        pick = make_plan(scores, target, n=1)
        kind, layer = next((k, getattr(pick, f)[0]) for k, f in PLAN_FIELDS.items() if getattr(pick, f))
        steps.append({"kind": kind, "layer": layer, "score": getattr(scores, kind)[layer]})
        start = kept_layers(model)[0].index(layer)  # the changed layer's position before the cut
        plan = _extend(plan, kind, layer)
        apply_plan(model, plan)
        if step == count - 1:
            break  # nothing left to choose: the last re-score would be wasted
        if reuse and start == len(kept_layers(model)[0]) and criterion not in MODEL_CRITERIA:
            scores = _merge(scores, scores, below=layer, plan=plan)  # the last block went: nothing to re-run
            continue
        new = compute_scores(model, input_ids, cache=cache, start=start if reuse else 0, **score_args)
        cost += new.meta["forward_equivalents"]
        scores = _merge(scores, new, below=layer, plan=plan)
    plan = Plan(**(plan.to_dict() | {"meta": plan.meta | {"n": count, "criterion": criterion}}))
    model.config.drop_plan = plan.to_dict()
    return DropResult(plan, first, steps, cost)


def _combine(done: Plan, new: Plan) -> Plan:
    """The cuts a pruned model already has plus a new plan's (both index the original layers)."""
    both = {f: sorted(set(getattr(done, f)) | set(getattr(new, f))) for f in PLAN_FIELDS.values()}
    clash = set(both["blocks"]) & (set(both["attn"]) | set(both["mlp"]))
    if clash:
        raise ValueError(
            f"The model already dropped sub-layers of layers {sorted(clash)} that the new plan drops whole; "
            "plan the block drop on the original model instead"
        )
    return Plan(done.num_layers, **both, remove_residual=new.remove_residual, meta=new.meta)


def _extend(plan: Plan, kind: str, layer: int) -> Plan:
    grown = plan.to_dict()
    grown[PLAN_FIELDS[kind]] = [*grown[PLAN_FIELDS[kind]], layer]
    return Plan.from_dict(grown)


def _merge(old: Scores, new: Scores, below: int, plan: Plan) -> Scores:
    """Scores after a cut at layer `below`: layers under it are unchanged (keep `old`), the rest are new.

    Everything the plan dropped is NaN, so no module is ever chosen twice (also when the Table 6
    ablation keeps a dropped attention's modules running).
    """
    nan = float("nan")
    dropped = {"attn": set(plan.attn) | set(plan.blocks), "mlp": set(plan.mlp) | set(plan.blocks)}
    dropped["block"] = set(plan.blocks)
    merged = {}
    for kind in SCORE_KINDS:
        pairs = zip(getattr(old, kind), getattr(new, kind), strict=True)
        # A whole-model criterion (loss) re-measures every layer: its new values win below the cut too.
        values = [o if i < below and math.isnan(v) else v for i, (o, v) in enumerate(pairs)]
        merged[kind] = [nan if i in dropped[kind] else v for i, v in enumerate(values)]
    return Scores(**merged, meta=new.meta)
