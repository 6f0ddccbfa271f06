"""Drop plans: which attention sub-layers, MLP sub-layers and whole blocks to remove.

A plan is plain data indexed by the *original* model's layer numbers, so it can be saved beside
the scores, applied to a fresh copy of the model, and read back from a pruned model's config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whatmatters.method.score_data import Scores


@dataclass(frozen=True)
class Plan:
    """Modules to drop, by original layer index."""

    num_layers: int
    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()
    blocks: tuple[int, ...] = ()
    # Table 6 ablation: a dropped attention takes its residual branch with it (h = Attn(X) instead of h = X).
    # Stored here so a saved model records exactly how it was cut.
    remove_residual: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("attn", "mlp", "blocks"):
            idx = getattr(self, name)
            object.__setattr__(self, name, tuple(sorted(int(i) for i in idx)))
            if len(set(idx)) != len(idx):
                raise ValueError(f"Plan drops the same {name} layer twice: {sorted(idx)}")
            bad = [i for i in idx if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"Plan {name} indices {bad} out of range for {self.num_layers} layers")
        if len(self.blocks) == self.num_layers:
            raise ValueError("Plan removes every block; keep at least one decoder layer")
        both = set(self.blocks) & (set(self.attn) | set(self.mlp))
        if both:
            raise ValueError(f"Layers {sorted(both)} are dropped as blocks and as sub-layers; list them once")

    def to_dict(self) -> dict:
        return asdict(self) | {"attn": list(self.attn), "mlp": list(self.mlp), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------------
# Making plans from scores
# ---------------------------------------------------------------------------------------------
TARGETS = ("block", "mlp", "attn", "joint")


def target_kinds(target: str) -> tuple[str, ...]:
    """The module kinds a target's plan chooses among (joint: attention and MLP)."""
    return ("attn", "mlp") if target == "joint" else (target,)


@dataclass(frozen=True)
class MethodSpec:
    """What to drop: the target, the amount (n or ratio) and the ablations, as the `method` config group gives
    them (conf/method/_spec.yaml). Validation, planning and the drop read it from here, one bundle."""

    target: str
    n: int | None = None
    ratio: float | None = None
    consecutive: bool = False
    remove_residual: bool = False

    @classmethod
    def from_config(cls, method: Any) -> MethodSpec:
        """From a `method` config (DictConfig or dict); keys it does not declare (angular, budget) stay."""
        return cls(**{f: method.get(f, getattr(cls, f, None)) for f in cls.__dataclass_fields__})

    def count(self, num_layers: int | None, left: int | None = None) -> int | None:
        """How many modules this drops from a model of `num_layers` (`drop_count`: the one rule)."""
        return drop_count(self.target, num_layers, self.n, self.ratio, left)

    def amount(self) -> dict[str, Any]:
        """The keyword arguments `one_shot_drop` / `iterative_drop` / `make_plan` take for the amount."""
        return {"n": self.n, "ratio": self.ratio, "remove_residual": self.remove_residual}


def parse_label(label: str) -> tuple[str, int | None, float | None]:
    """`<target>-<n>` or `<target>-<fraction>` (attn-8, block-4, attn-0.25) -> (target, n, ratio): the one
    parser of the labels that table cells, speed plans and exports take."""
    target, _, amount = str(label).rpartition("-")
    try:
        value: int | float | None = float(amount) if "." in amount else int(amount)
    except ValueError:
        value = None
    if target not in TARGETS or value is None:
        raise ValueError(
            f"{label!r} is not <target>-<n> or <target>-<fraction> with target one of {TARGETS}, "
            "e.g. attn-16 or attn-0.25"
        )
    return (target, value, None) if isinstance(value, int) else (target, None, value)


class AmountError(ValueError):
    """An amount to drop out of range. It names the config field, the value, the valid range and the fix, so
    config validation (before any model loads) and planning report the same rule in the same words."""

    def __init__(self, field: str, value: object, valid: str, fix: str) -> None:
        super().__init__(f"{field}={value!r} is not valid: {valid}. Fix: {fix}")


def drop_count(
    target: str,
    num_layers: int | None,
    n: int | None = None,
    ratio: float | None = None,
    left: int | None = None,
) -> int | None:
    """How many `target` modules to drop: `n`, or `ratio` of the target's modules (joint: 2 per layer).

    The one home of the rule (validation and planning both call it): exactly one of n and ratio; n a whole
    number >= 1, ratio in (0, 1]; at most `left` modules (default: all of them, but one block must stay).
    `num_layers` None (a model whose config is not at hand) checks what it can and returns n (None for a
    ratio). A pruned model's plan counts toward the total a ratio refers to, so `left` can be smaller.
    """
    if target not in TARGETS:
        raise AmountError("method.target", target, f"one of {TARGETS}", "method=attn (or block, mlp, joint)")
    if (n is None) == (ratio is None):
        raise AmountError(
            "method.n",
            n,
            f"exactly one of method.n and method.ratio set (ratio={ratio})",
            "method.n=8 method.ratio=null, or method.n=null method.ratio=0.25",
        )
    total = None if num_layers is None else (2 * num_layers if target == "joint" else num_layers)
    if left is None and total is not None:
        left = total - 1 if target == "block" else total
    limit = "" if left is None else f"..{left}"
    if ratio is not None:
        if isinstance(ratio, bool) or not 0 < ratio <= 1:
            raise AmountError(
                "method.ratio", ratio, "a fraction in (0, 1] of the target's modules", "method.ratio=0.25"
            )
        if total is None:
            return None
        count = round(ratio * total)
        if not 1 <= count <= left:
            raise AmountError(
                "method.ratio",
                ratio,
                f"a fraction that drops 1{limit} of this model's {total} {target} modules (it gives {count})",
                f"a ratio between {1 / total:.3f} and {left / total:.3f}",
            )
        return count
    if isinstance(n, bool) or not isinstance(n, int):
        raise AmountError("method.n", n, f"a whole number 1{limit}", "method.n=8")
    if n == 0:
        raise AmountError(
            "method.n",
            0,
            f"1{limit}: n=0 drops nothing. The unpruned baseline is measured and recorded by "
            "every run (its record is <model>-baseline, method.target none)",
            "use method.n >= 1; for the baseline alone run any n and read its baseline record",
        )
    if n < 1 or (left is not None and n > left):
        raise AmountError(
            "method.n",
            n,
            f"1{limit} for {target} on this model ({total} modules)",
            f"method.n={max(1, min(n, left or 1))}",
        )
    return n


def _lowest(candidates: dict[tuple[str, int], float], n: int) -> list[tuple[str, int]]:
    # Ties break by (kind, layer) so a plan never depends on dict order.
    return sorted(candidates, key=lambda key: (candidates[key], key))[:n]


def make_plan(
    scores: Scores,
    target: str,
    n: int | None = None,
    ratio: float | None = None,
    consecutive: bool = False,
    remove_residual: bool = False,
) -> Plan:
    """One-shot plan: drop the `n` lowest-scored modules of `target` (or the best block span).

    Modules already missing from the scored model (NaN scores) are never chosen again.
    """
    num_layers = scores.num_layers
    count = drop_count(target, num_layers, n, ratio)
    if consecutive:
        if target != "block":
            raise ValueError("consecutive mode drops a span of whole blocks; use target=block")
        return _span_plan(scores, count)
    kinds = target_kinds(target)
    candidates = {}
    for kind in kinds:
        values = getattr(scores, kind)
        if len(values) != num_layers:  # all-NaN is fine: every such module is already dropped
            raise ValueError(f"The scores have no {kind} values; a {target} plan needs them")
        candidates |= {(kind, i): v for i, v in enumerate(values) if not math.isnan(v)}
    if count > len(candidates):
        raise ValueError(f"Cannot drop {count} {target} modules: only {len(candidates)} remain")
    chosen = _lowest(candidates, count)
    picked = {k: [i for kind, i in chosen if kind == k] for k in ("attn", "mlp", "block")}
    meta = {"target": target, "n": count, "mode": "one_shot", "criterion": scores.meta.get("criterion")}
    return Plan(
        num_layers,
        attn=picked["attn"],
        mlp=picked["mlp"],
        blocks=picked["block"],
        remove_residual=remove_residual,
        meta=meta,
    )


def _span_plan(scores: Scores, n: int) -> Plan:
    """Drop layers l..l+n-1 where the stream changes least: min over l of angular(h_l, h_{l+n}).

    `angular` is indexed by the layers that ran (`meta["kept_layers"]`, original numbers): on an already
    pruned model a span is n layers consecutive in it, named by their original numbers (plans index the
    original model).
    """
    if scores.angular is None:
        raise ValueError("consecutive block drop needs angular distances; score with angular=true")
    num_layers = scores.num_layers
    kept = list(scores.meta.get("kept_layers", range(num_layers)))
    if len(scores.angular) != len(kept) + 1:
        raise ValueError(
            f"The angular distances cover {len(scores.angular) - 1} layers but the scores' kept_layers "
            f"list {len(kept)}: this scores.json does not describe one model; re-score it"
        )
    if n >= len(kept):
        raise ValueError(
            f"Cannot drop a span of {n} blocks: the model has {len(kept)}; use n <= {len(kept) - 1}"
        )
    if n == 0:
        return Plan(num_layers, meta={"target": "block", "n": 0, "mode": "consecutive"})
    distances = {start: scores.angular[start][start + n] for start in range(len(kept) - n + 1)}
    start = min(distances, key=lambda s: (distances[s], s))
    meta = {
        "target": "block",
        "n": n,
        "mode": "consecutive",
        "angular": scores.meta.get("angular", "mean"),
        "angular_distance": distances[start],
    }
    return Plan(num_layers, blocks=kept[start : start + n], meta=meta)
