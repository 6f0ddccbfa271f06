"""Seam repair: each fused repair equals the unfused "pruned model + map", the linear map is the least-squares
solution of its activations, and a repaired model saves and reloads exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_experiment import tiny_run  # noqa: F401  (the fixture: a tiny model, data, eval and speed job)
from transformers import AutoModelForCausalLM

import whatmatters.method.surgery  # noqa: F401  (registers the pruned classes with the Auto classes)
from conftest import tiny_model
from whatmatters.apps import run as run_app
from whatmatters.apps import validate
from whatmatters.apps.validate import ConfigError
from whatmatters.method.plans import Plan
from whatmatters.method.repair import RepairSpec, gaps, repair
from whatmatters.method.surgery import apply_plan

ROOT = Path(__file__).parents[1]
IDS = torch.randint(0, 128, (6, 24), generator=torch.Generator().manual_seed(1))  # 144 tokens > d = 32
# Gaps (slot 2i = attn i, 2i + 1 = mlp i): attn 0 (no host), mlp 1, blocks 3-4 (a span), attn 6.
PLAN = Plan(8, attn=[0, 6], mlp=[1], blocks=[3, 4])
# Rescaling is exact up to the RMSNorm eps; a tiny model's stream (~0.02 an entry) is near the default 1e-6.
NO_EPS = 1e-12


def _pair(plan: Plan = PLAN, **overrides) -> tuple:
    """A tiny Llama with biases on every linear (so fusion must carry them) and its cut copy."""
    shape = dict(num_hidden_layers=plan.num_layers, attention_bias=True, mlp_bias=True) | overrides
    original = tiny_model("llama", **shape)
    return original, apply_plan(copy.deepcopy(original), plan)


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _layer(model, original_index: int):
    kept = [i for i in range(PLAN.num_layers) if i not in PLAN.blocks]
    return model.model.layers[kept.index(original_index)]


def test_gaps_are_maximal_runs_of_removed_slots():
    found = [(g.first, g.last) for g in gaps(PLAN)]
    assert found == [(0, 0), (3, 3), (6, 9), (12, 12)]


def test_linear_repair_fused_equals_the_unfused_model_plus_its_maps():
    original, pruned = _pair()
    unfused = copy.deepcopy(pruned)
    found, summary = repair(pruned, original, IDS, RepairSpec(kind="linear"))
    assert found[0].matrix is None and "no kept write" in summary["gaps"][0]["note"]
    handles = []
    for gap in found[1:]:
        layer = _layer(unfused, gap.host // 2)
        linear = layer.mlp.down_proj if gap.host % 2 else layer.self_attn.o_proj
        matrix = gap.matrix

        def apply(module, args, out, matrix=matrix):
            return (out.double() @ matrix).to(out.dtype)

        handles.append(linear.register_forward_hook(apply))
    assert not torch.allclose(_logits(pruned), _logits(apply_plan(copy.deepcopy(original), PLAN)), atol=1e-3)
    torch.testing.assert_close(_logits(pruned), _logits(unfused), atol=2e-5, rtol=1e-4)
    for handle in handles:
        handle.remove()


def _stream_into(model, index: int, ids=IDS) -> torch.Tensor:
    """The residual stream entering model.model.layers[index], [tokens, d] float64."""
    seen = []
    hook = model.model.layers[index].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("hidden_states", args[0] if args else None)),
        with_kwargs=True,
    )
    _logits(model, ids)
    hook.remove()
    return torch.cat([t.reshape(-1, t.shape[-1]) for t in seen]).double()


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_linear_map_and_its_residual_equal_a_direct_lstsq_solve(ridge):
    """One block span (blocks 2-3 of 6): H = layer 1's down_proj output in the pruned model, D = original's
    stream entering layer 4 minus (pruned stream entering layer 4 - H); torch.linalg.lstsq on [H; sqrt(lam) I]
    against [D; sqrt(lam) I] must give the same T and the same data residual ||H T - D||^2 / ||D||^2."""
    plan = Plan(6, blocks=[2, 3])
    original, pruned = _pair(plan)
    writes = []
    hook = pruned.model.layers[1].mlp.down_proj.register_forward_hook(lambda m, a, out: writes.append(out))
    stream = _stream_into(pruned, 2)  # pruned layer 2 = original layer 4
    hook.remove()
    h = torch.cat([w.reshape(-1, w.shape[-1]) for w in writes]).double()
    d = _stream_into(original, 4) - (stream - h)
    lam = ridge * torch.trace(h.T @ h) / h.shape[1]
    eye = torch.eye(h.shape[1], dtype=torch.float64)
    solution = torch.linalg.lstsq(torch.cat([h, lam.sqrt() * eye]), torch.cat([d, lam.sqrt() * eye])).solution

    (gap,), summary = repair(pruned, original, IDS, RepairSpec(kind="linear", ridge=ridge))
    torch.testing.assert_close(gap.matrix, solution, atol=1e-6, rtol=1e-6)
    direct = float(((h @ solution - d) ** 2).sum() / (d**2).sum())
    assert summary["gaps"][0]["residual_fit"] == pytest.approx(direct, rel=1e-6)
    assert summary["gaps"][0]["residual_fit"] < summary["gaps"][0]["residual_cut"]  # fits its data


def test_magnitude_repair_fused_equals_scaling_the_stream_after_each_gap():
    """Gaps ending at a layer boundary (MLP 1, blocks 3-4): the reference multiplies the stream entering the
    next layer by alpha (what the removed slots did to its size); the fused model scales every later write by
    1/alpha instead. Equal logits up to the RMSNorm eps."""
    plan = Plan(8, mlp=[1], blocks=[3, 4])
    original, pruned = _pair(plan, rms_norm_eps=NO_EPS)
    unfused = copy.deepcopy(pruned)
    found, _ = repair(pruned, original, IDS, RepairSpec(kind="magnitude"))
    assert all(g.alpha is not None and g.alpha > 0 for g in found)
    kept = [i for i in range(8) if i not in plan.blocks]
    handles = []
    for gap in found:
        nxt = kept.index((gap.last + 1) // 2)

        def scale(module, args, kwargs, alpha=gap.alpha):
            if args:
                return (args[0] * alpha, *args[1:]), kwargs
            return args, kwargs | {"hidden_states": kwargs["hidden_states"] * alpha}

        handles.append(unfused.model.layers[nxt].register_forward_pre_hook(scale, with_kwargs=True))
    torch.testing.assert_close(_logits(pruned), _logits(unfused), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(_logits(pruned), _logits(apply_plan(copy.deepcopy(original), plan)), atol=1e-3)


def test_magnitude_repair_equals_the_paper_direction_of_scaling_earlier_weights():
    """Prune&Comp scales the weights *before* a gap by alpha; fusing 1/alpha into those after it (so a tied
    embedding stays as is) is the same function up to the RMSNorm eps, attention gaps included."""
    plan = Plan(6, attn=[2])
    original, pruned = _pair(plan, rms_norm_eps=NO_EPS)
    earlier = copy.deepcopy(pruned)
    (gap,), _ = repair(pruned, original, IDS, RepairSpec(kind="magnitude"))
    assert gap.alpha != pytest.approx(1.0)
    with torch.no_grad():
        earlier.model.embed_tokens.weight *= gap.alpha
        for layer in earlier.model.layers[:2]:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
                linear.weight *= gap.alpha
                linear.bias *= gap.alpha
    torch.testing.assert_close(_logits(pruned), _logits(earlier), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "magnitude"])
def test_repaired_model_saves_and_reloads_with_identical_logits(tmp_path, kind):
    original, pruned = _pair()
    params = pruned.num_parameters()
    repair(pruned, original, IDS, RepairSpec(kind=kind))
    assert pruned.num_parameters() == params  # fused: no new module or weight
    pruned.save_pretrained(tmp_path / kind)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / kind, attn_implementation="eager").eval()
    assert reloaded.config.drop_plan == pruned.config.drop_plan
    assert torch.equal(_logits(pruned), _logits(reloaded))


def test_repair_refuses_a_family_with_a_norm_after_its_out_proj():
    original = tiny_model("gemma2")
    pruned = apply_plan(copy.deepcopy(original), Plan(4, blocks=[2]))
    with pytest.raises(ValueError, match=r"not supported for the gemma2 family.*post_norm.*repair=none"):
        repair(pruned, original, IDS, RepairSpec(kind="linear"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("repair.kind=cubic", r"repair.kind='cubic' is not valid: one of"),
        ("repair.n=0", r"repair.n=0 is not valid: a whole number >= 1"),
        ("repair.ridge=-1", r"repair.ridge=-1 is not valid: a number >= 0"),
        ("method.remove_residual=true", r"repair='linear' is not valid: a drop that keeps the residual"),
    ],
)
def test_bad_repair_settings_fail_before_any_model_loads(tiny_run, override, message):  # noqa: F811
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        bad = compose("run", overrides=[*tiny_run, "method.n=2", "repair=linear", override])
    with pytest.raises(ConfigError, match=message):
        validate.check(bad, "run")


def test_a_repaired_run_records_its_repair_and_is_named_by_it(tmp_path, tiny_run):  # noqa: F811
    args = ["method.n=2", "repair=linear", "repair.n=2", "repair.seq_len=16"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        record = run_app.run(compose("run", overrides=[*tiny_run, *args]), tmp_path / "out")
    info = record.extra["repair"]
    assert info["kind"] == "linear" and info["tokens"] == 32 and info["gaps"]
    assert record.method.extra["repair"]["ridge"] == 1e-4
    assert record.name.endswith("linear-repair") and record.plan["attn"]
