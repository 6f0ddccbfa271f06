"""The analysis measures on tiny random models, each checked against a direct computation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_data import tiny_tokenizer

from conftest import tiny_model
from whatmatters.data import _hellaswag_docs, calibration_ids
from whatmatters.method import analysis
from whatmatters.method.plans import Plan
from whatmatters.method.scores import Scores, compute_scores
from whatmatters.method.stability import (
    Calibration,
    kendall_tau,
    lowest,
    sampled_ids,
    score_calibrations,
    smallest_stable,
    stability_table,
    top_k_overlap,
)

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def test_attention_rows_sum_to_one_and_never_look_ahead(family):
    maps = analysis.attention_maps(tiny_model(family), IDS)
    assert maps.shape == (4, 2, 4, 12, 12)  # (layers, batch, heads, queries, keys)
    assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)
    future = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
    assert maps[..., future].abs().max() == 0


def test_attention_maps_restore_the_attention_implementation():
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    analysis.attention_maps(model, IDS)
    assert model.config._attn_implementation == "sdpa"


def test_entropy_and_sink_share_match_a_direct_loop():
    maps = analysis.attention_maps(tiny_model("llama"), IDS)
    entropy, sink = analysis.attention_entropy(maps), analysis.sink_share(maps)
    layer, head = 2, 3
    rows = [maps[layer, b, head, q] for b in range(2) for q in range(1, 12)]
    direct_entropy = sum(-sum(p * math.log(p) for p in row.tolist() if p > 0) for row in rows) / len(rows)
    assert entropy[layer, head].item() == pytest.approx(direct_entropy, rel=1e-5)
    assert sink[layer, head].item() == pytest.approx(sum(row[0].item() for row in rows) / len(rows), rel=1e-6)


def test_hooked_streams_add_up_to_the_next_layers_input(family):
    s = analysis.residual_streams(tiny_model(family), IDS)
    assert s.attn_in.shape == (4, 2, 12, 32)
    # What the attention branch adds, added to its input, is the MLP branch's input; and so on.
    assert torch.allclose(s.attn_in + s.attn_out, s.mlp_in, atol=1e-5)
    assert torch.allclose(s.layer_out[:-1], s.attn_in[1:], atol=1e-5)


def test_relative_magnitude_is_the_norm_ratio_of_the_hooked_tensors():
    model = tiny_model("llama")
    layer = model.model.layers[1]
    seen = {}
    hooks = [
        layer.input_layernorm.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].clone())),
        layer.self_attn.register_forward_hook(lambda m, a, o: seen.update(f=o[0].clone())),
    ]
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    for h in hooks:
        h.remove()
    direct = (seen["f"].norm(dim=-1) / seen["x"].norm(dim=-1)).mean(0)  # (T,)
    ratio = analysis.relative_magnitude(analysis.residual_streams(model, IDS))
    assert ratio["attn"].shape == (4, 12) and ratio["mlp"].shape == (4, 12)
    assert torch.allclose(ratio["attn"][1], direct, rtol=1e-5)


def test_relative_magnitude_leaves_out_tokens_whose_stream_is_zero():
    x = torch.ones(1, 2, 3, 4)  # (L, B, T, D)
    x[0, 0, 1] = 0.0  # one token of the first sequence has ||X|| = 0
    f = 2 * torch.ones(1, 2, 3, 4)
    ratio = analysis.relative_magnitude(analysis.Streams(x, f, x, f))
    assert torch.equal(ratio["attn"], torch.full((1, 3), 2.0))  # the other sequence's 2.0 alone at position 1


def test_streams_reproduce_the_cosine_importance_scores(family):
    model = tiny_model(family)
    s = analysis.residual_streams(model, IDS)
    scores = compute_scores(model, IDS, angular=False, progress=False)
    for kind, x, f in (("attn", s.attn_in, s.attn_out), ("mlp", s.mlp_in, s.mlp_out)):
        direct = (1 - F.cosine_similarity(x, x + f, dim=-1)).mean(dim=(1, 2))
        assert torch.allclose(direct, torch.tensor(getattr(scores, kind)), rtol=1e-4, atol=1e-6)


def test_token_similarity_matches_the_mean_off_diagonal_cosine():
    h = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(1))  # (B, T, D)
    direct = []
    for seq in h[:, 1:]:  # skip=1 leaves out the first token
        cos = F.cosine_similarity(seq[:, None], seq[None], dim=-1)
        off = ~torch.eye(len(seq), dtype=torch.bool)
        direct.append(cos[off].mean())
    assert analysis.token_similarity(h).item() == pytest.approx(torch.stack(direct).mean().item(), abs=1e-6)
    same = torch.ones(2, 5, 4)
    assert analysis.token_similarity(same, skip=0).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        analysis.token_similarity(torch.ones(1, 2, 4), skip=1)


def test_over_smoothing_changes_are_differences_of_the_similarities():
    s = analysis.residual_streams(tiny_model("llama"), IDS)
    out = analysis.over_smoothing(s)
    assert torch.allclose(out["attn_change"], out["mlp_in"] - out["attn_in"])
    assert torch.allclose(out["layer_out"][0], analysis.token_similarity(s.attn_in[1]), atol=1e-6)


@pytest.mark.parametrize("kind", ["attn", "mlp"])
def test_zeroing_a_branch_gives_the_logits_of_the_model_cut_by_surgery(family, kind):
    from whatmatters.method.surgery import apply_plan

    model = tiny_model(family)
    cut = apply_plan(copy.deepcopy(model), Plan(4, **{kind: (2,)}))
    with analysis.branch_zeroed(model, kind, 2):
        hooked = analysis.logits(model, IDS)
    assert torch.allclose(hooked, analysis.logits(cut, IDS), atol=1e-5)
    assert not torch.allclose(hooked, analysis.logits(model, IDS), atol=1e-5)  # the hook is gone again


def test_a_no_op_drop_has_zero_kl_and_full_top1_agreement():
    model = tiny_model("llama")
    ref = analysis.logits(model, IDS)
    assert analysis.next_token_divergence(ref, ref) == (pytest.approx(0.0, abs=1e-7), 1.0)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()  # attention 1 now adds nothing already
    effects = analysis.drop_effects(model, IDS, "attn")
    assert effects["layer"] == [0, 1, 2, 3]
    assert effects["kl"][1] == pytest.approx(0.0, abs=1e-6) and effects["top1"][1] == 1.0
    assert min(effects["kl"][i] for i in (0, 2, 3)) > 1e-6  # real drops do change the output


def test_kl_matches_a_direct_computation():
    a, b = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    p, q = a.softmax(-1), b.softmax(-1)
    direct = (p * (p.log() - q.log())).sum(-1).mean().item()
    kl, top1 = analysis.next_token_divergence(a, b)
    assert kl == pytest.approx(direct, rel=1e-5)
    assert top1 == (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def test_bad_branch_or_ids_are_refused_with_the_valid_range():
    model = tiny_model("llama")
    with (
        pytest.raises(ValueError, match=r"layer=4 is out of range.*0\.\.3"),
        analysis.branch_zeroed(model, "attn", 4),
    ):
        pass
    with pytest.raises(ValueError, match="kind must be one of"), analysis.branch_zeroed(model, "block", 0):
        pass
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        analysis.residual_streams(model, IDS[0])


# ---------------------------------------------------------------------------------------------
# Score stability
# ---------------------------------------------------------------------------------------------
def test_kendall_tau_and_top_k_overlap():
    a = [0.5, 0.1, 0.3, float("nan"), 0.2]
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, [-v for v in a]) == pytest.approx(-1.0)
    assert lowest(a, 2) == {1, 4}
    # layer 3 is unscored in `a` (dropped), so it does not count: lowest {0, 4} vs {1, 4}
    assert top_k_overlap(a, [0.1, 0.5, 0.3, 0.0, 0.2], 2) == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau(a, a[:-1])


def _scores(attn: list[float]) -> Scores:
    return Scores(attn=attn, mlp=[1.0] * len(attn), block=[1.0] * len(attn))


def test_smallest_stable_needs_every_larger_set_to_agree():
    results = {
        Calibration("lee", 1, 8): _scores([0.1, 0.2, 0.9, 0.8]),  # same plan {0, 1}, by chance
        Calibration("lee", 2, 8): _scores([0.9, 0.2, 0.1, 0.8]),  # {1, 2}: differs
        Calibration("lee", 4, 8): _scores([0.2, 0.1, 0.8, 0.9]),  # {0, 1}
        Calibration("lee", 8, 8): _scores([0.1, 0.2, 0.8, 0.9]),  # {0, 1}: the reference
    }
    assert smallest_stable(results, "attn", 2) == Calibration("lee", 4, 8)
    table = stability_table(results, Calibration("lee", 8, 8), "attn", 2)
    assert table["same_plan"].tolist() == [True, False, True, True]
    assert table["top2_overlap"].tolist() == [1.0, 0.5, 1.0, 1.0]
    assert table["kendall_tau"].iloc[-1] == pytest.approx(1.0)


def test_seeds_draw_different_chunks_of_the_same_pool():
    tok = tiny_tokenizer()
    pool = calibration_ids(tok, "lee", 16, 32)
    a, b = (sampled_ids(tok, Calibration("lee", 4, 32, seed), pool=16) for seed in (0, 1))
    assert torch.equal(a, sampled_ids(tok, Calibration("lee", 4, 32, 0), pool=16))
    assert not torch.equal(a, b)
    rows = {tuple(r) for r in pool.tolist()}
    assert all(tuple(r) in rows for r in a.tolist() + b.tolist())
    with pytest.raises(ValueError, match="pool=2 chunks cannot supply n=4"):
        sampled_ids(tok, Calibration("lee", 4, 32), pool=2)


def test_score_calibrations_scores_each_set():
    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    sets = [Calibration("lee", 2, 16, seed) for seed in (0, 1)]
    results = score_calibrations(model, tok, sets, pool=8)
    assert list(results) == sets
    direct = compute_scores(model, sampled_ids(tok, sets[1], pool=8), angular=False, progress=False)
    assert results[sets[1]].attn == direct.attn


def test_hellaswag_source_reads_unique_contexts_without_wikihow_markers():
    docs = _hellaswag_docs()
    assert len(docs) > 5000 and len(docs) == len(set(docs))
    assert not any("[header]" in d or "[step]" in d or "[title]" in d for d in docs)
    ids = calibration_ids(tiny_tokenizer(), "hellaswag", 2, 64)
    assert ids.shape == (2, 64)
