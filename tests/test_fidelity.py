"""Fidelity to the original on held-out text: per-sequence KL, NLL and top-1, and their paired intervals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from whatmatters.method import analysis
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import apply_plan
from whatmatters.records import metrics

IDS = torch.randint(0, 128, (5, 12), generator=torch.Generator().manual_seed(0))


def test_a_model_against_itself_has_zero_kl_full_agreement_and_its_own_nll():
    model = tiny_model("llama")
    out = analysis.fidelity(model, model, IDS, batch_size=2)
    assert out["kl"] == [0.0] * 5 and out["top1"] == [1.0] * 5 and out["nll"] == out["nll_original"]
    logits = model(input_ids=IDS).logits[:, :-1]
    want = F.cross_entropy(logits.flatten(0, 1), IDS[:, 1:].flatten(), reduction="none").view(5, 11).sum(1)
    assert out["nll"] == pytest.approx(want.tolist(), rel=1e-5) and out["tokens"] == [11.0] * 5


def test_per_sequence_kl_and_agreement_equal_the_divergence_of_that_sequence():
    original = tiny_model("llama")
    pruned = apply_plan(tiny_model("llama"), Plan(4, attn=(1, 2)))
    out = analysis.fidelity(original, pruned, IDS, batch_size=3)  # batches of 3 and 2: split must not matter
    for i in range(5):
        kl, top1 = analysis.next_token_divergence(
            analysis.logits(original, IDS[i : i + 1])[:, :-1], analysis.logits(pruned, IDS[i : i + 1])[:, :-1]
        )
        assert out["kl"][i] == pytest.approx(kl, rel=1e-5) and out["top1"][i] == pytest.approx(top1)
    assert min(out["kl"]) > 0


def test_summary_perplexity_is_the_token_weighted_one_and_intervals_hold_it():
    per_seq = {"nll": [10.0, 20.0, 12.0, 30.0], "nll_original": [9.0, 18.0, 12.0, 25.0], "tokens": [10.0] * 4,
               "kl": [0.1, 0.3, 0.0, 0.4], "top1": [0.9, 0.7, 1.0, 0.6]}  # fmt: skip
    s = metrics.fidelity_summary(per_seq)
    assert s["ppl"]["value"] == pytest.approx(math.exp(72 / 40))
    assert s["ppl_original"]["value"] == pytest.approx(math.exp(64 / 40))
    assert s["ppl_delta"]["value"] == pytest.approx(math.exp(72 / 40) - math.exp(64 / 40))
    assert s["kl"]["value"] == pytest.approx(0.2) and s["top1"]["value"] == pytest.approx(80.0)
    for est in s.values():
        assert est["low"] <= est["value"] <= est["high"]
    assert s["kl"]["low"] < s["kl"]["high"]  # the sequences differ: the interval has width


def test_fidelity_difference_is_paired_and_refuses_different_sequences():
    a = {"kl": [0.5, 0.7, 0.6], "tokens": [10.0] * 3}
    b = {"kl": [0.4, 0.6, 0.5], "tokens": [10.0] * 3}
    diff = metrics.fidelity_difference(a, b, "kl")
    # Every sequence differs by exactly 0.1: a paired interval has no width, an unpaired one would.
    assert diff == pytest.approx({"value": 0.1, "low": 0.1, "high": 0.1})
    with pytest.raises(metrics.UnpairedError, match="different held-out sequences"):
        metrics.fidelity_difference(a, {"kl": [0.1, 0.2], "tokens": [10.0] * 2}, "kl")
