"""Where one `generate` call spends its time, and what a plan could save at best.

The ideal speedup of a plan is 1 / (1 - the share of the call spent in the modules it really removes): a
realized speedup above it means the measurement, not the model, changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whatmatters.method.plans import Plan
from whatmatters.records.metrics import Estimate


@dataclass(frozen=True)
class Profile:
    """Seconds in each layer's attention branch, MLP branch and whole block during one `generate` of the
    original model (measured by `timing.profile`), and the call's total."""

    total_s: float
    attn_s: tuple[float, ...]
    mlp_s: tuple[float, ...]
    block_s: tuple[float, ...]
    calls: tuple[Profile, ...] = field(default=(), compare=False, repr=False)  # every profiled call

    def shares(self) -> dict[str, float]:
        """Fractions of the `generate` time in attention, MLP and the rest (residual adds, embeddings, final
        norm, head, sampling, Python)."""
        attn, mlp = sum(self.attn_s) / self.total_s, sum(self.mlp_s) / self.total_s
        return {"attn": attn, "mlp": mlp, "rest": 1.0 - attn - mlp}


def ideal_speedup(prof: Profile, plan: Plan) -> float:
    """1 / (1 - share of the time spent in the modules `plan` really removes).

    A residual-removal plan (Table 6 ablation) keeps every attention and only cuts its skip connection:
    it removes no compute, so its attention counts for nothing here (ideal 1.0 for an attention-only plan).
    """
    if plan.num_layers != len(prof.block_s):
        raise ValueError(f"The plan is for {plan.num_layers} layers, the profile has {len(prof.block_s)}")
    attn = () if plan.remove_residual else plan.attn
    removed = sum(prof.attn_s[i] for i in attn) + sum(prof.mlp_s[i] for i in plan.mlp)
    removed += sum(prof.block_s[i] for i in plan.blocks)
    return prof.total_s / (prof.total_s - removed)


def ideal_interval(prof: Profile, plan: Plan) -> tuple[float, float]:
    """The lowest and highest ideal speedup over the profiled calls: the ideal is measured too, and moves
    between calls as the time shares do."""
    ideals = [ideal_speedup(call, plan) for call in prof.calls] or [ideal_speedup(prof, plan)]
    return min(ideals), max(ideals)


def exceeds_ideal(speedup: Estimate, ideal_high: float) -> bool:
    """Whether the realized speedup's interval lies above the ideal's (its highest profiled call): impossible,
    so a measurement artefact (load during the original's calls, a profile too short) to flag."""
    return speedup.low > ideal_high
