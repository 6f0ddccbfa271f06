"""Quantization with dropping: either order cuts for real, stays near full precision, reloads exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM

from conftest import tiny_model
from whatmatters.method.plans import Plan
from whatmatters.method.quant import ORDERS, SCHEMES, QuantSpec, compare_scores, quantize, weight_bytes
from whatmatters.method.scores import Scores
from whatmatters.method.surgery import DroppedAttention, DroppedMLP, apply_plan

ROOT = Path(__file__).parents[1]
# hidden 64 and intermediate 128: every linear's input size is a multiple of the int4 group size.
SHAPE = dict(hidden_size=64, intermediate_size=128, head_dim=16)
PLAN = Plan(4, attn=(1, 2), mlp=(3,))
SPECS = [QuantSpec("int8"), QuantSpec("int4", group_size=32), QuantSpec("w8a8")]
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
# Relative logit error ||q - fp|| / ||fp|| on the tiny random model (measured: int8 ~0.01, w8a8 ~0.01,
# int4 ~0.19). The bounds leave some margin; a scheme that quantized far coarser than it says would fail.
TOLERANCE = {"int8": 0.03, "w8a8": 0.03, "int4": 0.3}


def _model():
    return tiny_model("llama", **SHAPE)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits


def _quantized_weights(model) -> int:
    return sum(type(p) is not torch.nn.Parameter and type(p) is not torch.Tensor for p in model.parameters())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.scheme)
def test_quantized_logits_stay_within_the_stated_tolerance_of_full_precision(spec):
    model = _model()
    full = _logits(model)
    quantize(model, spec)
    error = ((_logits(model) - full).norm() / full.norm()).item()
    assert 0 < error < TOLERANCE[spec.scheme]


@pytest.mark.parametrize("order", ORDERS)
def test_either_order_removes_the_dropped_modules_and_their_cache_slots(order):
    spec = QuantSpec("int4", order, group_size=32)
    model = _model()
    if spec.before_drop:
        quantize(model, spec)
    apply_plan(model, PLAN)
    if not spec.before_drop:
        quantize(model, spec)
    layers = model.model.layers
    assert all(isinstance(layers[i].self_attn, DroppedAttention) for i in PLAN.attn)
    assert isinstance(layers[3].mlp, DroppedMLP)
    # 4 layers x 7 linears, less 2 attentions x 4 and 1 MLP x 3: only the kept linears hold quantized weights.
    assert _quantized_weights(model) == 4 * 7 - 2 * 4 - 3
    with torch.no_grad():
        out = model.generate(
            IDS, max_new_tokens=3, do_sample=False, pad_token_id=0, return_dict_in_generate=True
        )
    assert len(out.past_key_values.layers) == 4 - len(PLAN.attn)


def test_both_orders_give_the_same_weights_for_one_plan():
    """Weight-only schemes quantize each matrix on its own: the orders differ only in what gets scored."""
    spec = QuantSpec("int4", group_size=32)
    first, second = _model(), _model()
    apply_plan(quantize(first, spec), PLAN)
    quantize(apply_plan(second, PLAN), spec)
    assert torch.equal(_logits(first), _logits(second))


def test_dropping_after_quantizing_frees_the_quantized_weights():
    model = quantize(_model(), QuantSpec("int8"))
    before = weight_bytes(model)
    layer = model.model.layers[1]
    dropped = weight_bytes(layer.self_attn) + weight_bytes(layer.input_layernorm)  # a branch owns its norm
    apply_plan(model, Plan(4, attn=(1,)))
    assert weight_bytes(model) == before - dropped


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.scheme)
def test_a_quantized_pruned_model_saves_and_reloads_exactly(tmp_path, spec):
    model = apply_plan(quantize(_model(), spec), PLAN)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert isinstance(again.model.layers[1].self_attn, DroppedAttention)
    assert isinstance(again.model.layers[3].mlp, DroppedMLP)
    assert type(again.model.layers[0].self_attn.q_proj.weight) is type(
        model.model.layers[0].self_attn.q_proj.weight
    )
    assert torch.equal(_logits(again), _logits(model))


def test_quantized_weights_take_fewer_bytes():
    model = _model()
    full = weight_bytes(model)
    assert weight_bytes(quantize(model, QuantSpec("int8"))) < full / 2  # the linears are most of it


def test_only_the_integer_matmul_scheme_has_a_cpu_kernel():
    assert QuantSpec("w8a8").has_kernel("cpu")
    assert not QuantSpec("int4", group_size=32).has_kernel("cpu")
    assert not QuantSpec("int8").has_kernel("cpu")
    assert QuantSpec().has_kernel("cpu")  # no quantization: the float model is what is timed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scheme": "int3"}, "quant.scheme='int3'"),
        ({"scheme": "int8", "order": "sideways"}, "quant.order='sideways'"),
        ({"scheme": "int4", "group_size": None}, "quant.group_size=None"),
        ({"scheme": "int8", "group_size": 32}, "quant.group_size=32"),
    ],
)
def test_a_bad_quant_config_names_the_field_and_the_choices(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        QuantSpec(**kwargs)


def test_a_group_size_that_does_not_divide_a_linear_fails_before_quantizing():
    model = _model()
    with pytest.raises(ValueError, match="quant.group_size=48 does not divide"):
        quantize(model, QuantSpec("int4", group_size=48))
    assert _quantized_weights(model) == 0


def test_every_quant_config_parses_and_the_run_key_differs_by_scheme_and_order():
    from whatmatters.apps import run_keys  # imported only where its keys are tested

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfgs = {q: compose("run", overrides=[f"quant={q}"]) for q in ("none", *SCHEMES)}
        swapped = compose("run", overrides=["quant=int4", "quant.order=quant_then_drop"])
    for cfg in cfgs.values():
        QuantSpec.from_config(cfg)
    keys = {run_keys.run_key(cfg) for cfg in [*cfgs.values(), swapped]}
    assert len(keys) == len(cfgs) + 1
    baselines = {run_keys.baseline_key(cfg) for cfg in cfgs.values()}
    assert len(baselines) == len(cfgs)


def test_score_comparison_reports_rank_agreement_and_plan_overlap():
    fp = Scores(attn=[0.5, 0.1, 0.2, 0.3], mlp=[0.9, 0.4, 0.5, 0.6], block=[1.0, 0.5, 0.6, 0.7])
    same = compare_scores(fp, fp, attn_n=[2])
    assert same["kendall_tau"]["attn"] == pytest.approx(1.0)
    assert same["attn_plans"] == [{"n": 2, "full": [1, 2], "quantized": [1, 2], "overlap": 2}]
    swapped = Scores(attn=[0.5, 0.3, 0.2, 0.1], mlp=fp.mlp, block=fp.block)
    out = compare_scores(fp, swapped, attn_n=[2])
    assert out["kendall_tau"]["attn"] < 1.0 and out["kendall_tau"]["mlp"] == pytest.approx(1.0)
    assert out["attn_plans"][0]["overlap"] == 1


def test_table11_holds_both_precisions_with_their_baselines_beside_the_papers_rows():
    from conftest import record
    from whatmatters.report.tables import build_table

    int4 = {"scheme": "int4", "order": "drop_then_quant", "group_size": 64}
    untimed = {"speedup": {}, "kv_ratio": 0.8, "pruned": {"kv_cache_bytes": 2**20}, "not_timed": "no kernel"}
    runs = [
        record("none", 0, 60.0, None, key="b"),
        record("none", 0, 59.0, None, key="bq", quant=int4),
        record("attn", 4, 58.0, "table11", key="a4"),
        record(
            "attn", 4, 57.0, "table11", key="a4q", quant=int4, speed=untimed, params={"weight_bytes": 2**21}
        ),
        record("attn", 8, 55.0, "table11", key="a8q", quant=int4),
        record("attn", 4, 50.0, "table11", key="a4w8", quant={"scheme": "w8a8", "order": "drop_then_quant"}),
    ]
    frame = build_table(runs[:-1], "table11", "smollm2-135m", "embedded").set_index("method")
    assert list(frame.index) == ["Baseline", "Baseline int4", "Attn-4", "Attn-4 int4", "Attn-8 int4"]
    # Attn-4 and Attn-8 of 30 sit at Mistral-7B's fractions (4 and 8 of 32).
    assert frame.loc["Baseline int4", "paper row"] == "Mistral-7B: Baseline 4-bit"
    assert frame.loc["Baseline int4", "paper Avg"] == 66.1
    assert frame.loc["Attn-8 int4", "paper Avg"] == 65.9
    assert frame.loc["Attn-4", "paper Avg"] == 66.6
    assert frame.loc["Attn-4 int4", "weights MiB"] == 2.0 and frame.loc["Attn-4 int4", "KV MiB"] == 1.0
    assert pd.isna(frame.loc["Attn-4 int4", "speedup"])
    assert frame.loc["Attn-4 int4", "speedup flag"] == "not timed: no kernel"
    assert frame.loc["Attn-4", "speedup"] == 1.04  # timed full-precision rows keep their speedup
    # A scheme the paper did not run gets no paper row rather than the full-precision one.
    frame = build_table(runs, "table11", "smollm2-135m", "embedded").set_index("method")
    assert pd.isna(frame.loc["Attn-4 w8a8", "paper row"])


def test_score_stability_scores_one_model_before_and_after_quantizing_it():
    from whatmatters.method.quant import score_stability

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    model = _model()
    result = score_stability(model, ids, QuantSpec("int8"), attn_n=[2], progress=False)
    assert _quantized_weights(model) == 4 * 7  # the model was quantized in place for the second pass
    assert result["full"]["attn"] != result["quantized"]["attn"]  # quantization moved the scores a little
    assert result["kendall_tau"]["block"] > 0.5 and result["attn_plans"][0]["n"] == 2
    with pytest.raises(ValueError, match="quant.scheme=none"):
        score_stability(_model(), ids, QuantSpec(), attn_n=[2])
