"""The `method` checks behind `validate.check`: target, amount (n or ratio against the model's layers),
span, residual removal and budget. Each failure raises `ConfigError` naming field, value, range and fix.
"""

from __future__ import annotations

from omegaconf import DictConfig
from transformers import PreTrainedConfig

from whatmatters.apps.config_checks import ConfigError, fail
from whatmatters.measure.budget import BUDGET_TARGETS, Budget
from whatmatters.method.criteria import MODEL_CRITERIA
from whatmatters.method.drop import MODES
from whatmatters.method.plans import TARGETS, AmountError, MethodSpec
from whatmatters.method.scores import ANGULAR_TOKENS


def check_method(cfg: DictConfig, config: PreTrainedConfig | None) -> int | None:
    """The method's target, amount and options; returns how many modules it drops (None: layers unknown)."""
    if cfg.mode not in MODES:
        fail("mode", cfg.mode, f"one of {MODES}", "mode=one_shot")
    m = cfg.method
    if m.target not in TARGETS:
        fail("method.target", m.target, f"one of {TARGETS}", "method=attn (or block, mlp, joint)")
    if m.get("angular", "mean") not in ANGULAR_TOKENS:
        fail("method.angular", m.angular, f"one of {ANGULAR_TOKENS}", "method.angular=mean")
    if m.consecutive and m.target != "block":
        fail(
            "method.consecutive",
            True,
            f"false for target {m.target} (spans are of whole blocks)",
            "method=block, or method.consecutive=false",
        )
    if m.consecutive and cfg.criterion in MODEL_CRITERIA:
        fail(
            "criterion",
            cfg.criterion,
            "a per-module criterion: a consecutive span is chosen by angular distance, not scores",
            "criterion=cosine, or method.consecutive=false",
        )
    if m.consecutive and cfg.mode == "iterative":
        fail("method.consecutive", True, "false in iterative mode (a span is chosen once)", "mode=one_shot")
    if m.remove_residual and m.target != "attn":
        fail(
            "method.remove_residual",
            True,
            f"false for target {m.target} (Table 6 removes attention residuals)",
            "method=attn, or method.remove_residual=false",
        )
    if m.get("budget") is not None:
        check_budget(cfg)
        return None  # how many modules meet the budget is known once the scores and costs are
    total, left = modules(m.target, config)
    layers = None if total is None else total // (2 if m.target == "joint" else 1)
    try:
        return MethodSpec.from_config(m).count(layers, left)
    except AmountError as err:
        raise ConfigError(str(err)) from None


def check_budget(cfg: DictConfig) -> None:
    """`method.budget = {kind, target}` replaces n and ratio; picks sub-layers once, by one-shot scores."""
    m, b = cfg.method, cfg.method.budget
    if m.target not in BUDGET_TARGETS:
        fail("method.target", m.target, f"one of {BUDGET_TARGETS} with a budget", "method=joint")
    if m.n is not None or m.ratio is not None:
        fail("method.n", m.n, f"null with a budget (and method.ratio null, got {m.ratio})", "method.n=null")
    if cfg.mode != "one_shot" or m.consecutive or m.remove_residual:
        fail("mode", cfg.mode, "one_shot, no span, no residual removal with a budget", "mode=one_shot")
    target = b.get("target")
    if isinstance(target, bool) or not isinstance(target, int | float):
        fail("method.budget.target", target, "a number", "method.budget.target=1.2")
    try:
        Budget(b.get("kind"), float(target))
    except ValueError as err:  # Budget names the field, the value, the range and the fix
        raise ConfigError(str(err)) from None


def modules(target: str, config: PreTrainedConfig | None) -> tuple[int | None, int | None]:
    """(modules of the original model, modules that can still be dropped) for `target`.

    A pruned model's config records its plan (original numbering): its dropped modules count toward the
    total that a ratio refers to, but cannot be dropped again. At least one block must stay.
    """
    if config is None:
        return None, None
    plan = getattr(config, "drop_plan", None)
    layers = plan["num_layers"] if plan else config.num_hidden_layers
    blocks = layers - len(plan["blocks"]) if plan else layers
    done = {"attn": len(plan["attn"]), "mlp": len(plan["mlp"])} if plan else {"attn": 0, "mlp": 0}
    left = {
        "block": blocks - 1,
        "attn": blocks - done["attn"],
        "mlp": blocks - done["mlp"],
        "joint": 2 * blocks - done["attn"] - done["mlp"],
    }[target]
    return (2 * layers if target == "joint" else layers), left
