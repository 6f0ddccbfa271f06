"""apply_plan: dropped modules are gone (weights, cache slots) and the model computes what dropping means."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import tiny_model
from whatmatters.adapters import adapter_for
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import DroppedAttention, apply_plan

L = 4  # layers of the tiny models
# Longer than the Gemma tiny models' sliding window (8), so sliding cache layers really slide.
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _greedy(model, n: int = 6):
    with torch.no_grad():
        return model.generate(
            IDS,
            attention_mask=torch.ones_like(IDS),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
        )


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _zero_branch_outputs(model, plan: Plan) -> None:
    """Reference: the original with the dropped branches outputting zero (Gemma2/3 post-norm of 0 is 0)."""
    adapter = adapter_for(model)
    with torch.no_grad():
        for kind, out_proj, idx in (("attn", "o_proj", plan.attn), ("mlp", "down_proj", plan.mlp)):
            for i in idx:
                module = adapter.layers(model)[i].get_submodule(adapter.branch(kind).module)
                linear = module.get_submodule(out_proj)
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()


def _skip_blocks(model, blocks: tuple[int, ...]) -> None:
    """The reference for dropped blocks: those layers hand their input on unchanged."""
    for i in blocks:
        adapter_for(model).layers(model)[i].register_forward_hook(lambda mod, args, out: args[0])


def _layer_io(model, pos: int) -> dict:
    """Capture what decoder layer `pos` is called with and what it returns during one forward."""
    seen: dict = {}

    def hook(mod, args, kwargs, out):
        seen.update(x=args[0], kwargs=kwargs, out=out)

    handle = adapter_for(model).layers(model)[pos].register_forward_hook(hook, with_kwargs=True)
    _logits(model)
    handle.remove()
    return seen


def _mlp_branch(layer, adapter, h: torch.Tensor) -> torch.Tensor:
    """post(mlp(norm(h))) with the stock submodules of an unpruned layer."""
    mlp = adapter.mlp
    out = layer.get_submodule(mlp.module)(layer.get_submodule(mlp.norm)(h))
    return layer.get_submodule(mlp.post_norm)(out) if mlp.post_norm else out


def test_dropped_attention_layer_forward_equals_hand_written_skip_attention(family):
    original = tiny_model(family)
    pruned = apply_plan(copy.deepcopy(original), Plan(L, attn=(1,)))
    io = _layer_io(pruned, 1)
    # h = X + mlp_branch(X): the attention branch contributes nothing, the residual stays.
    expected = io["x"] + _mlp_branch(original.model.layers[1], adapter_for(original), io["x"])
    torch.testing.assert_close(io["out"], expected, rtol=0, atol=0)


def test_pruned_logits_equal_original_with_dropped_outputs_zeroed(family):
    plan = Plan(L, attn=(1, 2), mlp=(0, 3))
    original = tiny_model(family)
    pruned = apply_plan(copy.deepcopy(original), plan)
    _zero_branch_outputs(original, plan)
    torch.testing.assert_close(_logits(pruned), _logits(original))


def test_dropping_blocks_equals_running_only_the_kept_layers(family):
    plan = Plan(L, blocks=(0, 2))
    original = tiny_model(family)
    pruned = apply_plan(copy.deepcopy(original), plan)
    _skip_blocks(original, plan.blocks)
    assert len(pruned.model.layers) == pruned.config.num_hidden_layers == 2
    torch.testing.assert_close(_logits(pruned), _logits(original))
    assert torch.equal(_greedy(pruned).sequences, _greedy(original).sequences)


@pytest.mark.parametrize(
    "plan", [Plan(L, attn=(1,)), Plan(L, attn=(0, 3), blocks=(1,)), Plan(L, attn=(0, 1, 2, 3))]
)
def test_generate_allocates_one_cache_layer_per_kept_attention_and_matches_zeroed_original(family, plan):
    original = tiny_model(family)
    pruned = apply_plan(copy.deepcopy(original), plan)
    _zero_branch_outputs(original, plan)
    _skip_blocks(original, plan.blocks)
    out, ref = _greedy(pruned), _greedy(original)
    kept = [i for i in range(L) if i not in plan.blocks and i not in plan.attn]
    assert len(out.past_key_values.layers) == (L - len(plan.blocks)) - len(plan.attn) == len(kept)
    # Sliding vs full slots follow the kept attentions (Gemma2/3 alternate them; the rest are all full).
    types = getattr(original.config, "layer_types", None) or ["full_attention"] * L
    assert out.past_key_values.is_sliding == [types[i] == "sliding_attention" for i in kept]
    # A plain forward with use_cache builds its own cache the same way.
    assert len(pruned(IDS, use_cache=True).past_key_values.layers) == len(kept)
    # Through the renumbered cache, generation is that of the original with those outputs zeroed.
    assert torch.equal(out.sequences, ref.sequences)


def test_gemma3_cache_keeps_sliding_and_full_slots_of_the_kept_attentions():
    # Layer types: sliding, full, sliding, full; the kept attentions are full, sliding, full.
    pruned = apply_plan(tiny_model("gemma3_text"), Plan(L, attn=(0,)))
    assert [type(layer).__name__ for layer in _greedy(pruned).past_key_values.layers] == [
        "DynamicLayer",
        "DynamicSlidingWindowLayer",
        "DynamicLayer",
    ]
    attns = [layer.self_attn for layer in pruned.model.layers]
    assert isinstance(attns[0], DroppedAttention)
    assert [a.layer_idx for a in attns[1:]] == [0, 1, 2]


def test_parameter_count_falls_by_exactly_the_dropped_modules(family):
    plan = Plan(L, attn=(0, 2), mlp=(2, 3), blocks=(1,))
    original = tiny_model(family)
    adapter = adapter_for(original)
    layers = adapter.layers(original)
    dropped = sum(_num_params(layers[i]) for i in plan.blocks)
    for kind, idx in (("attn", plan.attn), ("mlp", plan.mlp)):
        for i in idx:
            dropped += sum(_num_params(layers[i].get_submodule(name)) for name in adapter.branch(kind).owned)
    pruned = apply_plan(copy.deepcopy(original), plan)
    assert _num_params(pruned) == _num_params(original) - dropped


@pytest.mark.parametrize(
    "plan", [Plan(L, attn=(1,), mlp=(2,), blocks=(3,)), Plan(L, attn=(0, 2), remove_residual=True)]
)
def test_save_reload_round_trip_gives_identical_logits_and_generations(family, plan, tmp_path):
    pruned = apply_plan(tiny_model(family), plan)
    pruned.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["drop_plan"] == plan.to_dict()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is type(pruned)
    assert Plan.from_dict(reloaded.config.drop_plan) == plan
    assert torch.equal(_logits(reloaded), _logits(pruned))
    assert torch.equal(_greedy(reloaded).sequences, _greedy(pruned).sequences)


def test_plain_hf_dir_still_loads_as_the_stock_class(family, tmp_path):
    stock = tiny_model(family)
    stock.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(reloaded) is type(stock)
    assert torch.equal(_logits(reloaded), _logits(stock))


def test_remove_residual_differs_from_plain_drop_and_matches_hand_computation(family):
    plan = Plan(L, attn=(1,), remove_residual=True)
    original = tiny_model(family)
    ablated = apply_plan(copy.deepcopy(original), plan)
    dropped = apply_plan(copy.deepcopy(original), Plan(L, attn=(1,)))
    assert _num_params(ablated) == _num_params(original)  # the attention is kept, only its residual goes
    io = _layer_io(ablated, 1)
    # By hand with the unpruned layer: h = post(attn(norm(X))) replaces X, then the MLP branch as usual.
    layer, adapter = original.model.layers[1], adapter_for(original)
    attn = layer.get_submodule(adapter.attn.module)
    h = attn(hidden_states=layer.get_submodule(adapter.attn.norm)(io["x"]), **io["kwargs"])[0]
    if adapter.attn.post_norm:
        h = layer.get_submodule(adapter.attn.post_norm)(h)
    torch.testing.assert_close(io["out"], h + _mlp_branch(layer, adapter, h))
    assert not torch.allclose(_logits(ablated), _logits(dropped))
    assert len(_greedy(ablated).past_key_values.layers) == L


def test_plan_for_another_layer_count_is_rejected():
    with pytest.raises(ValueError, match="6-layer model; this model has 4"):
        apply_plan(tiny_model("llama"), Plan(6, attn=(1,)))


def test_a_further_plan_that_drops_cuts_already_made_is_rejected():
    pruned = apply_plan(tiny_model("llama"), Plan(L, attn=(1,)))
    with pytest.raises(ValueError, match="already pruned"):
        apply_plan(pruned, Plan(L, attn=(2,)))


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_cutting_step_by_step_equals_cutting_once(family):
    """Iterative dropping cuts a pruned model further; the result equals applying the final plan once."""
    steps = [Plan(L, attn=(1,)), Plan(L, attn=(1,), blocks=(2,)), Plan(L, attn=(1, 3), blocks=(2,))]
    stepwise = tiny_model(family)
    for plan in steps:
        apply_plan(stepwise, plan)
    once = apply_plan(tiny_model(family), steps[-1])
    torch.testing.assert_close(_logits(stepwise), _logits(once))
    assert getattr(stepwise.config, "layer_types", None) == getattr(once.config, "layer_types", None)
    assert len(_greedy(stepwise).past_key_values.layers) == len(_greedy(once).past_key_values.layers) == 1
    assert sum(p.numel() for p in stepwise.parameters()) == sum(p.numel() for p in once.parameters())


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"mlp": [1]}, "weights do not match config.drop_plan"),  # same shapes, other modules
        ({"blocks": [1]}, "weights do not match config.drop_plan"),  # same block count, other blocks
        ({"blocks": [1, 3]}, "keeps 2 of 4 blocks"),  # contradicts num_hidden_layers
    ],
)
def test_corrupted_saved_plan_fails_with_a_clear_error(tmp_path, edit, match):
    apply_plan(tiny_model("gemma2"), Plan(L, attn=(0,), mlp=(2,), blocks=(3,))).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["drop_plan"].update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        AutoModelForCausalLM.from_pretrained(tmp_path)
