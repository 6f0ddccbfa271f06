"""A budgeted plan meets its budget on the cost profile, and the cut model really has the predicted cost."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from test_experiment import tiny_run  # noqa: F401  (the fixture: a tiny model, data, eval and speed job)

from conftest import tiny_model
from whatmatters.apps import run as run_app
from whatmatters.apps import validate
from whatmatters.apps.validate import ConfigError
from whatmatters.measure import budget as B
from whatmatters.measure.ideal import Profile, ideal_speedup
from whatmatters.measure.memory import kv_layer_bytes
from whatmatters.method.scores import Scores
from whatmatters.method.surgery import apply_plan

ROOT = Path(__file__).parents[1]


def _scores(num_layers: int = 4, seed: int = 0) -> Scores:
    g = torch.Generator().manual_seed(seed)
    attn, mlp, block = (torch.rand(num_layers, generator=g).tolist() for _ in range(3))
    return Scores(attn=attn, mlp=mlp, block=block, meta={"criterion": "cosine"})


def _minimal(plan, budget, costs) -> bool:
    chosen = [("attn", i) for i in plan.attn] + [("mlp", i) for i in plan.mlp]
    return all(not B._met(budget, B.predicted(budget, costs, [c for c in chosen if c != k])) for k in chosen)


@pytest.mark.parametrize("fraction", [0.9, 0.7, 0.5])
def test_params_budget_is_met_by_the_cut_model(fraction):
    model = tiny_model("llama")
    costs = B.param_costs(model)
    budget = B.Budget("params", fraction)
    plan = B.budget_plan(_scores(), budget, costs, "joint")
    assert plan.meta["predicted"] <= fraction and _minimal(plan, budget, costs)
    cut = apply_plan(copy.deepcopy(model), plan)
    assert cut.num_parameters() / model.num_parameters() == pytest.approx(plan.meta["predicted"])


def test_kv_budget_counts_attention_only_and_matches_the_cut_cache():
    model = tiny_model("llama", num_hidden_layers=6)
    costs = B.kv_costs(model, batch_size=2, seq_len=64, dtype="float32")
    budget = B.Budget("kv_bytes", 0.5)
    plan = B.budget_plan(_scores(6), budget, costs, "joint")
    assert not plan.mlp and len(plan.attn) == 3  # MLPs hold no cache: they never help this budget
    cut = apply_plan(copy.deepcopy(model), plan)
    kept = sum(kv_layer_bytes(cut.config, 2, 64, "float32"))
    assert kept / costs.total == pytest.approx(plan.meta["predicted"]) and kept / costs.total <= 0.5


def test_speedup_budget_prediction_is_the_ideal_speedup_and_prefers_cheap_unimportant_modules():
    prof = Profile(total_s=10.0, attn_s=(1.0, 1.0, 1.0, 1.0), mlp_s=(2.0, 2.0, 2.0, 2.0), block_s=(3.0,) * 4)
    scores = Scores(attn=[0.5, 0.1, 0.2, 0.3], mlp=[0.9, 0.15, 0.8, 0.7], block=[1.0] * 4)
    budget = B.Budget("speedup", 1.25)  # needs 2 s removed of 10
    plan = B.budget_plan(scores, budget, B.time_costs(prof), "joint")
    # per second: mlp1 0.075, attn1 0.1, attn2 0.2 ...: mlp1 alone removes 2 s, enough
    assert (plan.attn, plan.mlp) == ((), (1,))
    assert (
        plan.meta["predicted"] == pytest.approx(ideal_speedup(prof, plan)) and plan.meta["predicted"] >= 1.25
    )
    attn_only = B.budget_plan(scores, budget, B.time_costs(prof), "attn")
    assert attn_only.attn == (1, 2) and attn_only.meta["budget"] == {"kind": "speedup", "target": 1.25}


def test_unreachable_or_invalid_budgets_fail_with_the_field():
    prof = Profile(total_s=10.0, attn_s=(1.0,) * 4, mlp_s=(1.0,) * 4, block_s=(2.0,) * 4)
    with pytest.raises(ValueError, match="out of reach"):
        B.budget_plan(_scores(), B.Budget("speedup", 3.0), B.time_costs(prof), "attn")
    with pytest.raises(ValueError, match="method.budget.target"):
        B.Budget("params", 1.5)
    with pytest.raises(ValueError, match="method.budget.kind"):
        B.Budget("latency", 1.2)
    with pytest.raises(ValueError, match="method.target"):
        B.budget_plan(_scores(), B.Budget("speedup", 1.1), B.time_costs(prof), "block")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("run", overrides=overrides)


def test_a_bad_budget_fails_validation_naming_the_field(tiny_run):  # noqa: F811
    base = [*tiny_run, "method=joint", "method.n=null"]
    for extra, field in [
        (["+method.budget={kind:params,target:1.5}"], "method.budget.target=1.5"),
        (["+method.budget={kind:latency,target:0.5}"], "method.budget.kind='latency'"),
        (["+method.budget={kind:params,target:0.8}", "mode=iterative"], "mode='iterative'"),
        (["+method.budget={kind:params,target:0.8}", "method.n=4"], "method.n=4"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(field)):
            validate.check(_compose(base + extra), "run")


def test_a_budgeted_run_records_the_predicted_and_the_measured_cost(tmp_path, tiny_run):  # noqa: F811
    cfg = _compose([*tiny_run, "method=joint", "method.n=null", "+method.budget={kind:params,target:0.8}"])
    record = run_app.run(cfg, tmp_path / "out")
    assert record.plan["meta"]["budget"] == {"kind": "params", "target": 0.8}
    predicted = record.plan["meta"]["predicted"]
    assert predicted <= 0.8
    assert record.params["after"] / record.params["before"] == pytest.approx(predicted)
    assert record.speed is not None and record.name.endswith("joint-2-budget-params-0.8")
