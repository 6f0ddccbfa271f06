"""One-shot and iterative dropping: choices, reuse of unchanged layers, and cost."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from whatmatters.method.drop import iterative_drop, one_shot_drop
from whatmatters.method.plans import MethodSpec, Plan
from whatmatters.method.scores import Scores, compute_scores
from whatmatters.method.surgery import apply_plan

IDS = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(1))
NAN = float("nan")


def amplifier_model() -> torch.nn.Module:
    """A 4-layer Llama whose MLP ranking must change once the lowest MLP is dropped.

    Attention adds nothing. MLP 2 outputs a multiple of its normalised input: parallel to the
    stream, so it scores ~0, and it makes the stream ~25x larger, so MLP 3 (after it) adds
    little *relative* to the stream and scores low too. One-shot drops MLPs 2 and 3. Once MLP 2
    is gone, MLP 3's contribution is large again, and MLP 1 (before the amplifier) is next.
    """
    model = tiny_model("llama", mlp_bias=True)
    d = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            for linear in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                linear.bias.zero_()
        for i, scale in {0: 50.0, 1: 10.0, 3: 50.0}.items():
            model.model.layers[i].mlp.down_proj.weight.mul_(scale)
        amp = model.model.layers[2].mlp  # silu(20) ~ 20: down(silu(gate) * up(h)) = 0.5 h
        amp.gate_proj.weight.zero_()
        amp.gate_proj.bias.fill_(20.0)
        amp.up_proj.weight.zero_()
        amp.up_proj.weight[:d].copy_(torch.eye(d))
        amp.down_proj.weight.zero_()
        amp.down_proj.weight[:, :d].copy_(torch.eye(d) * 0.5 / 20.0)
    return model


def test_iterative_differs_from_one_shot_where_a_drop_changes_the_ranking():
    scores = compute_scores(amplifier_model(), IDS, progress=False)
    assert sorted(range(4), key=scores.mlp.__getitem__)[:2] == [2, 3]  # the construction holds
    one_shot = one_shot_drop(amplifier_model(), scores, MethodSpec("mlp", n=2))
    iterative = iterative_drop(amplifier_model(), IDS, "mlp", n=2, progress=False)
    assert one_shot.plan.mlp == (2, 3)
    assert iterative.plan.mlp == (1, 2)
    assert [s["layer"] for s in iterative.steps] == [2, 1]


@pytest.mark.parametrize(
    ("family", "target", "n"),
    [("llama", "attn", 3), ("qwen3", "mlp", 3), ("gemma3_text", "block", 3), ("gemma2", "joint", 7)],
)
def test_reusing_unchanged_layers_gives_the_same_drops_as_full_rescoring(family, target, n):
    """Re-scoring from the changed layer (cached input) equals a full re-score, at lower cost."""
    reused = iterative_drop(tiny_model(family), IDS, target, n=n, progress=False)
    full = iterative_drop(tiny_model(family), IDS, target, n=n, reuse=False, progress=False)
    assert reused.plan == full.plan
    for a, b in zip(reused.steps, full.steps, strict=True):
        assert (a["kind"], a["layer"]) == (b["kind"], b["layer"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    assert full.forward_equivalents == n  # the first pass + (n - 1) full re-scores
    assert 1.0 <= reused.forward_equivalents < full.forward_equivalents


def test_iterative_never_drops_a_module_twice_and_keeps_mlps_of_attention_only_drops():
    model = tiny_model("llama")
    result = iterative_drop(model, IDS, "joint", n=7, progress=False)  # 7 of the 8 sub-layers
    chosen = [(s["kind"], s["layer"]) for s in result.steps]
    assert len(set(chosen)) == 7
    assert len(result.plan.attn) + len(result.plan.mlp) == 7
    assert model.config.drop_plan == result.plan.to_dict()


def test_iterative_with_the_residual_ablation_never_picks_an_ablated_attention_again():
    result = iterative_drop(tiny_model("llama"), IDS, "attn", n=3, remove_residual=True, progress=False)
    assert len(set(result.plan.attn)) == 3 and result.plan.remove_residual


def test_one_shot_from_given_scores_prunes_the_model():
    model = tiny_model("mistral")
    scores = compute_scores(model, IDS, progress=False)
    result = one_shot_drop(model, scores, MethodSpec("attn", ratio=0.5))
    assert len(result.plan.attn) == 2
    assert model.config.drop_plan["attn"] == list(result.plan.attn)


def test_scores_of_another_model_are_rejected():
    scores = Scores(attn=[0.1] * 6, mlp=[0.1] * 6, block=[0.1] * 6)
    with pytest.raises(ValueError, match="6 layers but the model has 4"):
        one_shot_drop(tiny_model("llama"), scores, MethodSpec("attn", n=1))


def test_scores_of_a_pruned_model_are_indexed_by_original_layers():
    model = apply_plan(tiny_model("qwen2"), Plan(4, attn=(0,), blocks=(2,)))
    scores = compute_scores(model, IDS, progress=False)
    assert scores.num_layers == 4
    assert scores.meta["kept_layers"] == [0, 1, 3]
    nan = [i for i in range(4) if scores.attn[i] != scores.attn[i]]
    assert nan == [0, 2] and scores.block[2] != scores.block[2] and scores.mlp[0] == scores.mlp[0]


@torch.no_grad()
def test_a_span_drop_on_a_pruned_model_cuts_the_span_it_measured():
    model = apply_plan(tiny_model("llama", num_hidden_layers=6), Plan(6, blocks=(1,)))
    scores = compute_scores(model, IDS, progress=False)  # angular over the 5 kept layers 0, 2, 3, 4, 5
    kept = scores.meta["kept_layers"]
    start = min(range(len(kept) - 1), key=lambda p: (scores.angular[p][p + 2], p))
    result = one_shot_drop(model, scores, MethodSpec("block", n=2, consecutive=True))
    assert result.plan.blocks == tuple(sorted([1, *kept[start : start + 2]]))  # the old cut stays
    assert len(model.model.layers) == 3 and model.config.drop_plan["blocks"] == list(result.plan.blocks)


def test_a_one_shot_drop_on_a_pruned_model_adds_to_its_cuts():
    model = apply_plan(tiny_model("llama"), Plan(4, attn=(3,)))
    result = one_shot_drop(model, compute_scores(model, IDS, progress=False), MethodSpec("attn", n=1))
    assert len(result.plan.attn) == 2 and 3 in result.plan.attn
    blocks_over_attn = apply_plan(tiny_model("llama"), Plan(4, attn=(0, 1, 2)))
    scores = Scores(attn=[NAN, NAN, NAN, 0.5], mlp=[0.5] * 4, block=[0.1, 0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match=r"already dropped sub-layers of layers \[0\]"):
        one_shot_drop(blocks_over_attn, scores, MethodSpec("block", n=1))
