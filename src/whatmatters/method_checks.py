"""The `method` checks behind `validate.check`: target, amount (n or ratio against the model's layers),
span, residual removal and budget. Each failure raises `ConfigError` naming field, value, range and fix.
"""

from __future__ import annotations

from omegaconf import DictConfig
from transformers import PreTrainedConfig

from whatmatters.budget import BUDGET_TARGETS, Budget
from whatmatters.config_checks import ConfigError, fail
from whatmatters.criteria import MODEL_CRITERIA
from whatmatters.drop import MODES
from whatmatters.plans import TARGETS
from whatmatters.scores import ANGULAR_TOKENS


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
    if (m.n is None) == (m.ratio is None):
        fail(
            "method.n",
            m.n,
            f"exactly one of method.n and method.ratio set (ratio={m.ratio})",
            "method.n=8 method.ratio=null, or method.n=null method.ratio=0.25",
        )
    total, left = modules(m.target, config)
    limit = "" if left is None else f"..{left}"
    if m.ratio is not None:
        if isinstance(m.ratio, bool) or not 0 < m.ratio <= 1:
            fail("method.ratio", m.ratio, "a fraction in (0, 1] of the target's modules", "method.ratio=0.25")
        if total is None:
            return None
        count = round(m.ratio * total)
        if not 1 <= count <= left:
            fail(
                "method.ratio",
                m.ratio,
                f"a fraction that drops 1{limit} of this model's {total} {m.target} "
                f"modules (it gives {count})",
                f"a ratio between {1 / total:.3f} and {left / total:.3f}",
            )
        return count
    if isinstance(m.n, bool) or not isinstance(m.n, int):
        fail("method.n", m.n, f"a whole number 1{limit}", "method.n=8")
    if m.n == 0:
        fail(
            "method.n",
            0,
            f"1{limit}: n=0 drops nothing. The unpruned baseline is measured and recorded by "
            "every run (its record is <model>-baseline, method.target none)",
            "use method.n >= 1; for the baseline alone run any n and read its baseline record",
        )
    if m.n < 1 or (left is not None and m.n > left):
        fail(
            "method.n",
            m.n,
            f"1{limit} for {m.target} on this model ({total} modules)",
            f"method.n={max(1, min(m.n, left or 1))}",
        )
    return m.n


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
