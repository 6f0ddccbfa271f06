"""Drop plans from scores: ranking, joint ranking across kinds, consecutive spans, and bad input."""

from __future__ import annotations

import pytest

from whatmatters.method.plans import AmountError, Plan, drop_count, make_plan
from whatmatters.method.scores import Scores

NAN = float("nan")


def scores(**kw) -> Scores:
    base = dict(
        attn=[0.50, 0.05, 0.30, 0.01, 0.02, 0.20],
        mlp=[0.90, 0.40, 0.03, 0.25, 0.35, 0.60],
        block=[0.95, 0.45, 0.20, 0.10, 0.15, 0.70],
    )
    return Scores(**(base | kw), meta={"criterion": "cosine"})


@pytest.mark.parametrize(
    ("target", "n", "want"),
    [
        ("attn", 2, {"attn": (3, 4)}),
        ("mlp", 1, {"mlp": (2,)}),
        ("block", 3, {"blocks": (2, 3, 4)}),
        # Joint ranks attention and MLP together: 0.01, 0.02, 0.03 (mlp 2), 0.05.
        ("joint", 4, {"attn": (1, 3, 4), "mlp": (2,)}),
    ],
)
def test_one_shot_drops_the_lowest_scored_modules(target, n, want):
    plan = make_plan(scores(), target, n=n)
    assert {k: getattr(plan, k) for k in want} == want
    assert plan.meta["target"] == target and plan.meta["n"] == n


def test_joint_ranking_mixes_kinds_by_score():
    plan = make_plan(scores(), "joint", n=3)
    assert plan.attn == (3, 4) and plan.mlp == (2,)


def test_ratio_counts_the_targets_modules():
    assert drop_count("attn", 32, ratio=0.25) == 8
    assert drop_count("joint", 32, ratio=0.25) == 16  # joint has 2 modules per layer
    assert make_plan(scores(), "attn", ratio=0.5).attn == (1, 3, 4)


def test_already_dropped_modules_are_never_chosen_again():
    plan = make_plan(scores(attn=[0.5, 0.05, 0.3, NAN, NAN, 0.2]), "attn", n=2)
    assert plan.attn == (1, 5)


def test_consecutive_block_mode_picks_the_span_with_least_angular_change():
    n = 6
    angular = [[abs(i - j) * 0.1 for j in range(n + 1)] for i in range(n + 1)]
    angular[2][5] = 0.01  # layers 2, 3, 4 barely change the stream
    plan = make_plan(scores(angular=angular), "block", n=3, consecutive=True)
    assert plan.blocks == (2, 3, 4) and plan.meta["mode"] == "consecutive"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "attn", "n": -1}, "1..6 for attn on this model"),
        ({"target": "attn", "n": 7}, "1..6 for attn on this model"),
        ({"target": "joint", "n": 13}, "1..12 for joint on this model"),
        ({"target": "block", "n": 6}, "1..5 for block on this model"),
        ({"target": "attn", "ratio": 1.5}, r"a fraction in \(0, 1\]"),
        ({"target": "attn"}, "exactly one of method.n and method.ratio"),
        ({"target": "attn", "n": 1, "ratio": 0.1}, "exactly one of method.n and method.ratio"),
        ({"target": "heads", "n": 1}, "method.target='heads' is not valid"),
        ({"target": "mlp", "n": 1, "consecutive": True}, "use target=block"),
        ({"target": "block", "n": 2, "consecutive": True}, "needs angular"),
    ],
)
def test_bad_amounts_and_targets_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_plan(scores(), **kwargs)


def test_joint_plan_on_scores_missing_a_kind_is_rejected():
    with pytest.raises(ValueError, match="no mlp values"):
        make_plan(scores(mlp=[]), "joint", n=2)


def test_more_drops_than_remaining_modules_is_rejected():
    with pytest.raises(ValueError, match="only 2 remain"):
        make_plan(scores(attn=[NAN, NAN, NAN, NAN, 0.1, 0.2]), "attn", n=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attn": (1, 1)}, "same attn layer twice"),
        ({"blocks": (0, 1, 2, 3, 4, 5)}, "removes every block"),
        ({"mlp": (6,)}, "out of range"),
        ({"blocks": (1,), "attn": (1,)}, "dropped as blocks and as sub-layers"),
    ],
)
def test_invalid_plans_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plan(6, **kwargs)


def test_plan_json_round_trip(tmp_path):
    plan = make_plan(scores(), "joint", n=4)
    plan.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json")
    assert back == plan and back.meta == plan.meta


def test_a_span_on_a_pruned_model_is_named_by_its_kept_layers():
    # Block 1 of 6 already dropped: angular[p][q] is indexed by position among the kept layers 0, 2, 3, 4, 5.
    kept = [0, 2, 3, 4, 5]
    angular = [[abs(i - j) * 0.1 for j in range(len(kept) + 1)] for i in range(len(kept) + 1)]
    angular[1][3] = 0.01  # positions 1, 2 = original layers 2, 3
    pruned = scores(block=[0.95, NAN, 0.2, 0.1, 0.15, 0.7], angular=angular)
    pruned.meta["kept_layers"] = kept
    plan = make_plan(pruned, "block", n=2, consecutive=True)
    assert plan.blocks == (2, 3)
    with pytest.raises(ValueError, match="the model has 5; use n <= 4"):
        make_plan(pruned, "block", n=5, consecutive=True)


def test_span_and_kept_layers_that_disagree_are_refused():
    mismatched = scores(angular=[[0.0] * 7 for _ in range(7)])
    mismatched.meta["kept_layers"] = [0, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="does not describe one model"):
        make_plan(mismatched, "block", n=2, consecutive=True)


@pytest.mark.parametrize(
    "target, n, ratio",
    [("attn", 0, None), ("attn", None, 0.0), ("attn", None, 1.5), ("attn", 7, None), ("block", 6, None),
     ("mlp", True, None), ("joint", None, None), ("attn", 2, 0.5)],
)  # fmt: skip
def test_validation_and_planning_reject_the_same_amounts_in_the_same_words(target, n, ratio):
    from omegaconf import OmegaConf
    from transformers import LlamaConfig

    from whatmatters.apps.method_checks import check_method
    from whatmatters.apps.validate import ConfigError

    with pytest.raises(AmountError) as planned:
        make_plan(scores(), target, n=n, ratio=ratio)
    method = {"target": target, "n": n, "ratio": ratio, "consecutive": False, "remove_residual": False}
    cfg = OmegaConf.create({"mode": "one_shot", "criterion": "cosine", "method": method})
    with pytest.raises(ConfigError) as validated:
        check_method(cfg, LlamaConfig(num_hidden_layers=6))
    assert str(validated.value) == str(planned.value)
