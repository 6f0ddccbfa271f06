"""A model spread over devices by accelerate (how a 70B preset loads) scores, drops and generates like one
that is not: here a tiny Llama with half its layers offloaded to disk, run on the CPU through accelerate's
hooks, compared with the same weights undispatched."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_model
from whatmatters import models
from whatmatters.method.drop import iterative_drop, one_shot_drop
from whatmatters.method.plans import MethodSpec
from whatmatters.method.scores import compute_scores

IDS = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(2))
DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture
def pair(tmp_path):
    """(plain model, the same weights dispatched over cpu + disk)."""
    from accelerate import dispatch_model

    plain = tiny_model("llama")
    spread = dispatch_model(copy.deepcopy(plain), DEVICE_MAP, offload_dir=str(tmp_path / "offload"))
    assert any(p.device.type == "meta" for p in spread.parameters())  # the disk layers really are offloaded
    return plain, spread


@torch.no_grad()
def test_dispatched_logits_and_scores_equal_the_plain_models(pair):
    plain, spread = pair
    assert torch.allclose(plain(IDS).logits, spread(IDS).logits, atol=1e-5)
    want = compute_scores(plain, IDS, progress=False)
    got = compute_scores(spread, IDS, progress=False)
    for kind in ("attn", "mlp", "block"):
        assert getattr(got, kind) == pytest.approx(getattr(want, kind), abs=1e-5)
    assert torch.allclose(torch.tensor(got.angular), torch.tensor(want.angular), atol=1e-5)


@torch.no_grad()
def test_dropping_from_a_dispatched_model_cuts_the_same_modules_and_still_generates(pair):
    plain, spread = pair
    scores = compute_scores(plain, IDS, progress=False)
    want = one_shot_drop(plain, scores, MethodSpec("joint", n=3)).plan
    got = one_shot_drop(spread, scores, MethodSpec("joint", n=3)).plan
    assert got == want
    assert torch.allclose(plain(IDS).logits, spread(IDS).logits, atol=1e-5)
    out = spread.generate(IDS[:1, :4], max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    kept_attention = 4 - len(got.attn)
    assert len(out.past_key_values.layers) == kept_attention  # the KV cache holds only kept attention


@torch.no_grad()
def test_an_iterative_drop_on_a_dispatched_model_matches_the_plain_one(pair):
    plain, spread = pair
    want = iterative_drop(plain, IDS, "attn", n=2, progress=False)
    got = iterative_drop(spread, IDS, "attn", n=2, progress=False)
    assert got.plan == want.plan
    assert [s["score"] for s in got.steps] == pytest.approx([s["score"] for s in want.steps], abs=1e-5)


def test_load_with_a_device_map_hands_it_to_from_pretrained_and_skips_the_move(tiny_llama_dir, monkeypatch):
    plain, _ = models.load(str(tiny_llama_dir))
    seen = []
    real = models.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(*args, **kwargs)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    spread, _ = models.load(str(tiny_llama_dir), device="meta", device_map={"": "cpu"})
    assert seen == [{"": "cpu"}]  # the weights go where the map says; `device` is not applied on top
    assert {p.device.type for p in spread.parameters()} == {"cpu"}
    with torch.no_grad():
        assert torch.allclose(plain(IDS).logits, spread(IDS).logits)


@torch.no_grad()
def test_timing_kv_accounting_and_profile_run_on_a_dispatched_model(pair):
    from whatmatters.measure import timing
    from whatmatters.measure.job import Job

    plain, spread = pair
    job = Job(batch_size=1, prompt_len=6, new_tokens=2, repeats=1, warmup=0)
    profile = timing.profile(spread, job, calls=1)
    assert profile is not None
    scores = compute_scores(plain, IDS, progress=False)
    one_shot_drop(plain, scores, MethodSpec("attn", n=2))
    one_shot_drop(spread, scores, MethodSpec("attn", n=2))
    want, got = timing.measure(plain, job), timing.measure(spread, job)
    assert got.kv_cache_layers == want.kv_cache_layers == 2
    assert got.kv_cache_bytes == want.kv_cache_bytes


def test_a_random_init_model_is_dispatched_after_it_is_built(tiny_llama_dir):
    a, _ = models.load(str(tiny_llama_dir), random_init=True, seed=3)
    b, _ = models.load(str(tiny_llama_dir), random_init=True, seed=3, device_map="auto")
    assert hasattr(b, "hf_device_map")  # accelerate placed it (all on the CPU here)
    with torch.no_grad():
        assert torch.allclose(a(IDS).logits, b(IDS).logits)
