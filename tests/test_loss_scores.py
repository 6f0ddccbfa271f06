"""The loss criterion equals a brute-force loop: cut each module from a copy by surgery, measure the loss."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from conftest import tiny_model
from whatmatters.apps import run_keys
from whatmatters.method.drop import iterative_drop, one_shot_drop
from whatmatters.method.plans import MethodSpec, Plan
from whatmatters.method.scores import compute_scores, criteria
from whatmatters.method.surgery import apply_plan

ROOT = Path(__file__).parents[1]
FIELDS = {"attn": "attn", "mlp": "mlp", "block": "blocks"}


def _ids(n: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _loss(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    target = ids[:, 1:].masked_fill(~(mask[:, 1:].bool() & mask[:, :-1].bool()), -100)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten()).item()


def _brute_force(original, ids, mask, done: Plan) -> dict[tuple[str, int], float]:
    """Loss increase of each module `done` keeps, by really cutting a copy of the original to `done` + it."""
    base = _loss(apply_plan(copy.deepcopy(original), done), ids, mask)
    out = {}
    for kind, field in FIELDS.items():
        for layer in range(done.num_layers):
            if layer in set(done.blocks) | (set(getattr(done, field)) if kind != "block" else set()):
                continue
            cut = done.to_dict()
            if kind == "block":  # a layer that lost a sub-layer is listed once, as a block
                cut |= {f: [i for i in cut[f] if i != layer] for f in ("attn", "mlp")}
            plan = Plan.from_dict(cut | {field: [*cut[field], layer]})
            out[(kind, layer)] = _loss(apply_plan(copy.deepcopy(original), plan), ids, mask) - base
    return out


def _as_dict(scores) -> dict[tuple[str, int], float]:
    return {(kind, i): v for kind in FIELDS for i, v in enumerate(getattr(scores, kind)) if not math.isnan(v)}


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_loss_scores_equal_brute_force_removal(model_type):
    model = tiny_model(model_type)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding is excluded from the loss, as in the brute force
    scores = compute_scores(model, ids, mask, criterion="loss", progress=False)
    expected = _brute_force(model, ids, mask, Plan(4))
    got = _as_dict(scores)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert sorted(got, key=got.get) == sorted(expected, key=expected.get)
    # base pass + each candidate from its own layer: 1 + 3 * (4 + 3 + 2 + 1) / 4
    assert scores.meta["forward_equivalents"] == pytest.approx(1 + 3 * 10 / 4)
    assert scores.meta["criterion"] == "loss" and "loss" in criteria()


def test_loss_scores_of_a_pruned_model_skip_its_dropped_modules():
    original = tiny_model("llama")
    model = apply_plan(copy.deepcopy(original), Plan(4, attn=[2], blocks=[1]))
    ids = _ids()
    mask = torch.ones_like(ids)
    scores = compute_scores(model, ids, criterion="loss", progress=False)
    expected = _brute_force(original, ids, mask, Plan(4, attn=[2], blocks=[1]))
    got = _as_dict(scores)
    assert got.keys() == expected.keys() and math.isnan(scores.attn[2]) and math.isnan(scores.block[1])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.parametrize(
    "target",
    ["joint", pytest.param("attn", marks=pytest.mark.slow), pytest.param("block", marks=pytest.mark.slow)],
)
def test_iterative_loss_drop_equals_greedy_brute_force(target):
    model = tiny_model("llama", seed=3)
    ids = _ids()
    mask = torch.ones_like(ids)
    reference = copy.deepcopy(model)
    result = iterative_drop(model, ids, target, n=3, criterion="loss", progress=False)
    done = Plan(4)
    kinds = ("attn", "mlp") if target == "joint" else (target,)
    for step in result.steps:
        options = {k: v for k, v in _brute_force(reference, ids, mask, done).items() if k[0] in kinds}
        best = min(options, key=lambda k: (options[k], k))
        assert (step["kind"], step["layer"]) == best
        assert step["score"] == pytest.approx(options[best], abs=1e-5)
        field = FIELDS[best[0]]
        done = Plan.from_dict(done.to_dict() | {field: [*getattr(done, field), best[1]]})
    assert result.plan == done
    assert result.forward_equivalents > 1


def test_one_shot_loss_plan_drops_the_lowest_loss_increase():
    model = tiny_model("qwen2")
    ids = _ids()
    scores = compute_scores(model, ids, criterion="loss", progress=False)
    plan = one_shot_drop(model, scores, MethodSpec("attn", n=2)).plan
    assert list(plan.attn) == sorted(sorted(range(4), key=lambda i: scores.attn[i])[:2])


def test_loss_scores_of_one_kind_measure_only_it_at_a_third_of_the_cost():
    model = tiny_model("llama")
    ids = _ids()
    every = compute_scores(model, ids, criterion="loss", progress=False)
    attn = compute_scores(model, ids, criterion="loss", progress=False, kinds=("attn",))
    assert attn.attn == pytest.approx(every.attn, abs=1e-6)
    assert all(math.isnan(v) for v in attn.mlp + attn.block) and attn.meta["kinds"] == ["attn"]
    assert attn.meta["forward_equivalents"] == pytest.approx(1 + 10 / 4)  # base + attn of layers 0..3


def test_a_loss_score_cache_key_names_the_kinds_a_cosine_key_does_not():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = {
            t: compose("run", overrides=[f"method={t}", "criterion=loss"]) for t in ("attn", "mlp", "joint")
        }
        cosine = [compose("run", overrides=[f"method={t}"]) for t in ("attn", "mlp")]
    assert len({run_keys.scores_key(c) for c in cfg.values()}) == 3
    assert run_keys.scores_key(cosine[0]) == run_keys.scores_key(cosine[1])
