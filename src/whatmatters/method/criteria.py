"""Importance criteria, registered by name: adding one is one decorated function.

A token criterion maps (X, Y), float32 [tokens, hidden], to a per-token score (scores.py averages it over
every calibration token); an order criterion ignores the data (Table 7 baselines). Lower = less important.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TokenCriterion = Callable[[Tensor, Tensor], Tensor]
OrderCriterion = Callable[[int, int], list[float]]
TOKEN_CRITERIA: dict[str, TokenCriterion] = {}
ORDER_CRITERIA: dict[str, OrderCriterion] = {}


def token_criterion(name: str) -> Callable[[TokenCriterion], TokenCriterion]:
    def register(fn: TokenCriterion) -> TokenCriterion:
        TOKEN_CRITERIA[name] = fn
        return fn

    return register


def order_criterion(name: str) -> Callable[[OrderCriterion], OrderCriterion]:
    def register(fn: OrderCriterion) -> OrderCriterion:
        ORDER_CRITERIA[name] = fn
        return fn

    return register


@token_criterion("cosine")
def cosine(x: Tensor, y: Tensor) -> Tensor:
    """The paper's importance: S = 1 - cos(X, Y)."""
    return 1.0 - F.cosine_similarity(x, y, dim=-1)


@token_criterion("magnitude")
def magnitude(x: Tensor, y: Tensor) -> Tensor:
    """Relative magnitude ||f(X)|| / ||X|| of what the module adds (Table 7)."""
    return (y - x).norm(dim=-1) / x.norm(dim=-1)


@order_criterion("reverse")
def reverse(num_layers: int, seed: int) -> list[float]:
    """Deeper is less important: drops from the last layer backwards (Table 7)."""
    return [(num_layers - i) / num_layers for i in range(num_layers)]


@order_criterion("random")
def random(num_layers: int, seed: int) -> list[float]:
    """Seeded uniform scores: the no-information baseline (Table 7)."""
    return torch.rand(num_layers, generator=torch.Generator().manual_seed(seed)).tolist()


# Criteria that score a module by removing it and re-running the model (whatmatters.method.loss_scores), not
# from one pass's (X, Y): `loss` = increase of the calibration NLL when only that module is removed.
MODEL_CRITERIA = ("loss",)


def criteria() -> list[str]:
    return sorted(TOKEN_CRITERIA) + sorted(ORDER_CRITERIA) + list(MODEL_CRITERIA)
