"""Drop plans: which attention sub-layers, MLP sub-layers and whole blocks to remove.

A plan is plain data indexed by the *original* model's layer numbers, so it can be saved beside
the scores, applied to a fresh copy of the model, and read back from a pruned model's config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whatmatters.score_data import Scores


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


def drop_count(target: str, num_layers: int, n: int | None = None, ratio: float | None = None) -> int:
    """How many modules to drop: `n` as given, or `ratio` of the target's modules (joint: 2 per layer)."""
    if target not in TARGETS:
        raise ValueError(f"Unknown drop target {target!r}; choose one of {TARGETS}")
    total = 2 * num_layers if target == "joint" else num_layers
    if (n is None) == (ratio is None):
        raise ValueError(f"Give exactly one of n or ratio for the {target} drop (got n={n}, ratio={ratio})")
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        n = round(ratio * total)
    if not 0 <= n <= total:
        raise ValueError(f"Cannot drop {n} {target} modules: the model has {total}; use 0 <= n <= {total}")
    if target == "block" and n == total:
        raise ValueError(f"Dropping all {total} blocks leaves no model; drop at most {total - 1}")
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
