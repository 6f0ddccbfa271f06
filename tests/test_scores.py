"""Importance scores: equal to a hand computation from each layer's submodules, and robust to batching."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from whatmatters.adapters import UnsupportedArchitectureError, adapter_for
from whatmatters.method.scores import Scores, StreamCache, compute_scores


def calib(n: int = 3, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(seed))


def layer_calls(model, ids: torch.Tensor) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) each decoder layer is called with: its input and the model's masks/rotary."""
    calls, handles = [], []
    for layer in adapter_for(model).layers(model):
        handles.append(
            layer.register_forward_pre_hook(lambda m, a, k: calls.append((a, dict(k))), with_kwargs=True)
        )
    model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return calls


def hand_scores(model, ids: torch.Tensor) -> dict[str, list[float]]:
    """S = 1 - cos(X, Y) by hand: re-run each layer on its input, once whole and once with its MLP
    replaced by zeros (which gives the residual stream after attention, X + attn branch)."""
    adapter = adapter_for(model)
    per = {"attn": [], "mlp": [], "block": []}
    for layer, (args, kwargs) in zip(adapter.layers(model), layer_calls(model, ids), strict=True):
        x = args[0] if args else kwargs.pop("hidden_states")
        y = layer(x, *args[1:], **kwargs)
        mlp = getattr(layer, adapter.mlp.module)
        mlp.forward = lambda h: torch.zeros_like(h)  # Gemma's post-norm of zero is zero too
        y_attn = layer(x, *args[1:], **kwargs)
        del mlp.forward
        for kind, (a, b) in {"attn": (x, y_attn), "mlp": (y_attn, y), "block": (x, y)}.items():
            per[kind].append((1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean().item())
    return per


@torch.no_grad()
def test_scores_equal_hand_computation_for_every_family(family):
    model = tiny_model(family)
    ids = calib()
    got = compute_scores(model, ids, batch_size=len(ids), progress=False)
    want = hand_scores(model, ids)
    for kind in ("attn", "mlp", "block"):
        assert getattr(got, kind) == pytest.approx(want[kind], abs=1e-5), kind
    assert got.meta["tokens"] == ids.numel()


@torch.no_grad()
def test_one_pass_equals_separate_passes_per_kind():
    """All kinds from one pass equal what a pass dedicated to each kind gives (hooks do not interfere)."""
    model, ids = tiny_model("llama"), calib()
    together = compute_scores(model, ids, progress=False)
    without_angular = compute_scores(model, ids, angular=False, progress=False)
    hand = hand_scores(model, ids)
    for kind in ("attn", "mlp", "block"):
        assert getattr(together, kind) == pytest.approx(getattr(without_angular, kind), abs=1e-6)
        assert getattr(together, kind) == pytest.approx(hand[kind], abs=1e-5)


@torch.no_grad()
def test_batching_does_not_change_scores():
    model, ids = tiny_model("qwen2"), calib(n=5)
    one = compute_scores(model, ids, batch_size=1, progress=False)
    five = compute_scores(model, ids, batch_size=5, progress=False)
    two = compute_scores(model, ids, batch_size=2, progress=False)
    for kind in ("attn", "mlp", "block"):
        assert getattr(one, kind) == pytest.approx(getattr(five, kind), abs=1e-5)
        assert getattr(one, kind) == pytest.approx(getattr(two, kind), abs=1e-5)
    assert torch.allclose(torch.tensor(one.angular), torch.tensor(five.angular), atol=1e-5)


@torch.no_grad()
def test_padding_tokens_are_excluded():
    """Right-padded samples score exactly like the same samples without their padding."""
    model = tiny_model("llama")
    short = calib(n=1, length=8)
    long = calib(n=1, length=12, seed=2)
    padded = torch.stack([torch.cat([short[0], torch.zeros(4, dtype=torch.long)]), long[0]])
    mask = torch.ones_like(padded)
    mask[0, 8:] = 0
    got = compute_scores(model, padded, attention_mask=mask, batch_size=2, progress=False)
    # The reference: the same tokens, each sample on its own (no padding at all), token-weighted.
    a = compute_scores(model, short, progress=False)
    b = compute_scores(model, long, progress=False)
    for kind in ("attn", "mlp", "block"):
        want = [(8 * x + 12 * y) / 20 for x, y in zip(getattr(a, kind), getattr(b, kind), strict=True)]
        assert getattr(got, kind) == pytest.approx(want, abs=1e-5)
    assert got.meta["tokens"] == 20


@torch.no_grad()
def test_angular_distance_matches_hidden_states():
    """angular[i][j] = mean arccos(cos(h_i, h_j)) / pi between layer inputs (and the last output)."""
    model, ids = tiny_model("mistral"), calib()
    got = compute_scores(model, ids, progress=False)
    calls = layer_calls(model, ids)
    streams = [(a[0] if a else k["hidden_states"]) for a, k in calls]
    last = adapter_for(model).layers(model)[-1]
    streams.append(last(calls[-1][0][0], *calls[-1][0][1:], **calls[-1][1]))
    for i, j in [(0, 1), (1, 3), (0, 4), (2, 4)]:
        cos = F.cosine_similarity(streams[i], streams[j], dim=-1).clamp(-1, 1)
        assert got.angular[i][j] == pytest.approx((torch.arccos(cos) / math.pi).mean().item(), abs=1e-5)


@torch.no_grad()
def test_magnitude_criterion_is_relative_norm_of_the_branch():
    model, ids = tiny_model("llama"), calib()
    got = compute_scores(model, ids, criterion="magnitude", progress=False)
    calls = layer_calls(model, ids)
    layer, (args, kwargs) = adapter_for(model).layers(model)[1], calls[1]
    x = args[0]
    y = layer(x, *args[1:], **kwargs)
    assert got.block[1] == pytest.approx(((y - x).norm(dim=-1) / x.norm(dim=-1)).mean().item(), abs=1e-5)


@torch.no_grad()
def test_order_criteria_ignore_data_and_are_seeded():
    model = tiny_model("llama")
    rev = compute_scores(model, calib(), criterion="reverse", progress=False)
    assert rev.attn == sorted(rev.attn, reverse=True)  # deeper = lower = dropped first
    r1 = compute_scores(model, calib(), criterion="random", seed=3, progress=False)
    r2 = compute_scores(model, calib(seed=9), criterion="random", seed=3, progress=False)
    r3 = compute_scores(model, calib(), criterion="random", seed=4, progress=False)
    assert r1.attn == r2.attn and r1.attn != r3.attn and r1.attn != r1.mlp


def test_scores_json_round_trip_keeps_missing_modules(tmp_path):
    s = Scores(attn=[0.1, float("nan")], mlp=[0.2, 0.3], block=[0.4, 0.5], meta={"model": "x"})
    path = tmp_path / "scores.json"
    s.save(path)
    raw = json.loads(path.read_text())
    assert raw["attn"] == [0.1, None] and raw["meta"] == {"model": "x"}
    back = Scores.load(path)
    assert back.mlp == s.mlp and math.isnan(back.attn[1])


def test_corrupt_scores_file_names_the_file(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text('{"attn": [0.1]')
    with pytest.raises(ValueError, match="scores.json"):
        Scores.load(path)
    with pytest.raises(FileNotFoundError, match="No scores file"):
        Scores.load(tmp_path / "missing.json")


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown criterion 'cosin'.*cosine"):
        compute_scores(tiny_model("llama"), calib(), criterion="cosin", progress=False)


def test_unknown_architecture_names_supported_families_and_the_fix():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16))
    with pytest.raises(UnsupportedArchitectureError, match=r"gpt2.*llama.*register"):
        compute_scores(model, calib(), progress=False)


@pytest.mark.parametrize("shape", [(0, 4), (4,)])
def test_empty_or_1d_input_is_rejected(shape):
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        compute_scores(tiny_model("llama"), torch.zeros(shape, dtype=torch.long), progress=False)


@torch.no_grad()
@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_restart_from_cached_layer_input_equals_a_full_pass(family):
    """Changing layer 2 leaves layers 0-1 unchanged: re-scoring from the cached input of layer 2
    gives exactly the full pass's scores of layers >= 2, at (L - 2) / L of a forward pass."""
    model, ids = tiny_model(family), calib(n=4)
    cache = StreamCache()
    compute_scores(model, ids, batch_size=2, angular=False, cache=cache, progress=False)
    assert sorted(cache.inputs) == [0, 1, 2, 3] and len(cache.inputs[2]) == 2
    adapter = adapter_for(model)
    layer = adapter.layers(model)[2]
    getattr(layer, adapter.attn.module).o_proj.weight.mul_(3.0)  # layer 2 changes, 0-1 do not
    full = compute_scores(model, ids, batch_size=2, angular=False, progress=False)
    partial = compute_scores(model, ids, batch_size=2, angular=False, start=2, cache=cache, progress=False)
    for kind in ("attn", "mlp", "block"):
        assert all(math.isnan(v) for v in getattr(partial, kind)[:2])
        assert getattr(partial, kind)[2:] == pytest.approx(getattr(full, kind)[2:], abs=1e-6)
    assert partial.meta["forward_equivalents"] == 0.5
    assert sorted(cache.inputs) == [0, 1, 2, 3]  # refilled for the next restart


def test_restart_without_cached_inputs_is_rejected():
    with pytest.raises(ValueError, match="StreamCache"):
        compute_scores(tiny_model("llama"), calib(), start=2, angular=False, progress=False)
