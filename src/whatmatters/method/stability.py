"""How much per-layer importance scores depend on the calibration data: source, size and sample.

A drop plan only needs the *ranking* of the scores, and only at its low end, so stability is measured
as Kendall's tau of two score vectors (the whole ranking) and the overlap of their k lowest layers
(what a drop of k would remove), against a reference calibration set, plus whether the plan is the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from scipy.stats import kendalltau
from torch import nn
from transformers import PreTrainedTokenizerBase

from whatmatters.data import DataError, calibration_ids
from whatmatters.method.plans import make_plan
from whatmatters.method.scores import Scores, compute_scores


def _finite_pairs(a: Iterable[float], b: Iterable[float]) -> tuple[list[float], list[float]]:
    """The layers scored in both vectors (a dropped module is NaN)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"score vectors differ in length ({len(a)} vs {len(b)}): not the same model")
    keep = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not (math.isnan(x) or math.isnan(y))]
    return [a[i] for i in keep], [b[i] for i in keep]


def kendall_tau(a: Iterable[float], b: Iterable[float]) -> float:
    """Kendall's tau-b of two per-layer score vectors: 1 = same ranking, -1 = reversed."""
    x, y = _finite_pairs(a, b)
    return float(kendalltau(x, y).statistic)


def lowest(scores: Iterable[float], k: int) -> set[int]:
    """The k lowest-scored layers (ties by layer index, as `plans.make_plan` breaks them)."""
    values = list(scores)
    if not 0 < k <= len(values):
        raise ValueError(f"k must be in 1..{len(values)} (the number of layers), got {k}")
    finite = [i for i, v in enumerate(values) if not math.isnan(v)]
    return set(sorted(finite, key=lambda i: (values[i], i))[:k])


def top_k_overlap(a: Iterable[float], b: Iterable[float], k: int) -> float:
    """Share of the k lowest layers (the ones a drop of k removes) that two score vectors agree on.

    Only layers scored in both count, as for `kendall_tau`.
    """
    x, y = _finite_pairs(a, b)
    return len(lowest(x, k) & lowest(y, k)) / k


@dataclass(frozen=True)
class Calibration:
    """One calibration set: `n` chunks of `seq_len` tokens of `source`, drawn with `seed`."""

    source: str
    n: int
    seq_len: int
    seed: int = 0

    @property
    def tokens(self) -> int:
        return self.n * self.seq_len

    @property
    def label(self) -> str:
        return f"{self.source} {self.n}x{self.seq_len} s{self.seed}"


def sampled_ids(tokenizer: PreTrainedTokenizerBase, calibration: Calibration, pool: int) -> torch.Tensor:
    """`n` chunks drawn without replacement (seeded) from the first `pool` chunks of the source.

    Seeds therefore change *which* text is used, at the same size and from the same source.
    """
    if pool < calibration.n:
        raise DataError(f"pool={pool} chunks cannot supply n={calibration.n}; use pool >= n")
    chunks = calibration_ids(tokenizer, calibration.source, pool, calibration.seq_len)
    order = torch.randperm(pool, generator=torch.Generator().manual_seed(calibration.seed))
    return chunks[order[: calibration.n]]


def score_calibrations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    calibrations: Iterable[Calibration],
    pool: int,
    batch_size: int = 1,
) -> dict[Calibration, Scores]:
    """Cosine scores of `model` on each calibration set (one forward pass each)."""
    return {
        c: compute_scores(
            model, sampled_ids(tokenizer, c, pool), batch_size=batch_size, angular=False, progress=False
        )
        for c in calibrations
    }


def stability_table(
    results: dict[Calibration, Scores], reference: Calibration, kind: str, k: int
) -> pd.DataFrame:
    """One row per calibration set: tau and top-k overlap of its `kind` scores with the reference's,
    and whether its plan dropping k `kind` modules equals the reference's."""
    ref = getattr(results[reference], kind)
    ref_plan = make_plan(results[reference], kind, n=k)
    rows = [
        {
            "source": c.source,
            "n": c.n,
            "seq_len": c.seq_len,
            "seed": c.seed,
            "tokens": c.tokens,
            "kendall_tau": kendall_tau(ref, getattr(s, kind)),
            f"top{k}_overlap": top_k_overlap(ref, getattr(s, kind), k),
            "same_plan": make_plan(s, kind, n=k) == ref_plan,
        }
        for c, s in results.items()
    ]
    return pd.DataFrame(rows)


def smallest_stable(results: dict[Calibration, Scores], target: str, n: int) -> Calibration:
    """The smallest calibration set (in tokens) from which every set at least as large gives the plan of
    the largest one, for dropping `n` `target` modules (the largest itself when no smaller one does).

    "Every larger set too", not just "this one": a small set that agrees by chance is not a safe budget.
    """
    ordered = sorted(results, key=lambda c: (c.tokens, c.n))
    reference = make_plan(results[ordered[-1]], target, n=n)
    stable = ordered[-1]
    for c in reversed(ordered[:-1]):
        if make_plan(results[c], target, n=n) != reference:
            break
        stable = c
    return stable
