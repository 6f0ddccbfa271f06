"""Check a config before anything heavy happens: no model weights load, nothing is scored or written.

The apps (experiments/score.py, drop.py, run.py) call `check` first. Everything that can be known from
the config, the model's config.json (`AutoConfig`, no weights) and the machine is checked here, so a bad
value fails in seconds with a message naming the field, the value, the valid range and the fix, instead
of after minutes of loading and scoring. What only the run itself can find out (a truncated weights
file, a benchmark download that breaks half-way) still fails where it happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil
import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedConfig

from whatmatters import data, models
from whatmatters.budget import BUDGET_TARGETS, Budget
from whatmatters.drop import MODES
from whatmatters.plans import TARGETS
from whatmatters.scores import ANGULAR_TOKENS, MODEL_CRITERIA, criteria

APPS = ("score", "drop", "run")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A config value out of range; the message names the field, the value, the valid range and the fix."""


def _fail(field: str, value: Any, valid: str, fix: str) -> NoReturn:
    raise ConfigError(f"{field}={value!r} is not valid: {valid}. Fix: {fix}")


@dataclass(frozen=True)
class Checked:
    """What the checks learned without loading the model: its layers, and how many modules the run drops."""

    num_layers: int | None  # None where the model's config could not be read (a Hub id offline)
    count: int | None = None  # modules the method drops (drop and run apps)


def check(cfg: DictConfig, app: str) -> Checked:
    """Every check that needs no weights, for the `score`, `drop` or `run` app; raises ConfigError."""
    if app not in APPS:
        raise ValueError(f"Unknown app {app!r}; choose one of {APPS}")
    _check_common(cfg)
    config = models.model_config(cfg.model.name_or_path, cfg.model.get("revision"), shape=cfg.model.name)
    _check_data(cfg, config)
    if app == "score":
        if cfg.angular is not None and cfg.angular not in ANGULAR_TOKENS:
            _fail("angular", cfg.angular, f"one of {ANGULAR_TOKENS} or null", "angular=mean")
        _check_memory(cfg, config, iterative=False, angular=cfg.angular is not None)
        return Checked(_layers(config))
    count = _check_method(cfg, config)
    if app == "drop" and cfg.get("scores_path"):
        if cfg.mode == "iterative":
            _fail(
                "scores_path",
                cfg.scores_path,
                "null in iterative mode (it re-scores the pruned model)",
                "drop scores_path or use mode=one_shot",
            )
        if not Path(cfg.scores_path).is_file():
            _fail(
                "scores_path",
                cfg.scores_path,
                "an existing scores.json",
                "give the path experiments/score.py wrote",
            )
    if app == "run":
        from whatmatters import evaluate  # imports lm-eval (seconds): only the run app evaluates

        evaluate.check_suite(cfg.eval)  # unknown tasks, or the paper suite offline: fails before any load
        _check_heal(cfg)
    # The loss criterion caches every layer's input like an iterative drop does, one-shot too.
    cached = cfg.mode == "iterative" or cfg.criterion in MODEL_CRITERIA
    _check_memory(cfg, config, iterative=cached, angular=cfg.method.consecutive)
    return Checked(_layers(config), count)


def _layers(config: PreTrainedConfig | None) -> int | None:
    return None if config is None else config.num_hidden_layers


def _check_common(cfg: DictConfig) -> None:
    if cfg.criterion not in criteria():
        _fail("criterion", cfg.criterion, f"one of {criteria()}", "criterion=cosine (the paper's)")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        _fail("batch_size", cfg.batch_size, "a whole number >= 1", "batch_size=1")
    m = cfg.model
    if m.dtype not in models.DTYPES:
        _fail(
            "model.dtype",
            m.dtype,
            f"one of {sorted(models.DTYPES)}",
            "model.dtype=bfloat16 on a GPU, float32 on CPU",
        )
    device = str(cfg.device)
    if not DEVICE.match(device):
        _fail("device", device, "auto, cpu, mps, cuda or cuda:N", "device=auto")
    if device.startswith("cuda"):
        have = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= have:
            valid = f"a GPU index below {have}" if have else "cpu or auto: this machine has no CUDA GPU"
            _fail("device", device, valid, "device=auto (picks the GPU when there is one)")
    device_map = m.get("device_map")
    if device_map is not None and not isinstance(device_map, DictConfig) and device_map != "auto":
        _fail(
            "model.device_map",
            device_map,
            "null, auto, or a {module: device} mapping",
            "model.device_map=auto",
        )


def _check_data(cfg: DictConfig, config: PreTrainedConfig | None) -> None:
    d = cfg.data
    if d.source not in data.SOURCES:
        _fail(
            "data.source", d.source, f"one of {data.SOURCES}", "data=lee (offline) or data=c4 (the paper's)"
        )
    for field in ("n", "seq_len"):
        value = d[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(
                f"data.{field}", value, "a whole number >= 1", f"data.{field}={16 if field == 'n' else 2048}"
            )
    context = getattr(config, "max_position_embeddings", None) if config is not None else None
    if context is not None and d.seq_len > context:
        _fail(
            "data.seq_len",
            d.seq_len,
            f"1..{context} (the model's context, max_position_embeddings)",
            f"data.seq_len={min(2048, context)}",
        )
    if d.source in ("lee", "hellaswag", "text", "tokens"):
        _check_corpus(cfg)


def _check_corpus(cfg: DictConfig) -> None:
    """Local calibration text must hold n x seq_len tokens: build the ids now (tokenizer only, seconds)."""
    try:
        where = models.resolve(cfg.model.name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(
            where, revision=cfg.model.get("revision"), local_files_only=True
        )
    except (OSError, ValueError):
        return  # no local tokenizer (a Hub id not cached): the model load fetches or reports it
    d = cfg.data
    try:
        data.calibration_ids(tokenizer, d.source, d.n, d.seq_len, d.path)
    except data.DataError as err:
        raise ConfigError(
            f"data.n={d.n}, data.seq_len={d.seq_len}, data.source={d.source!r}: {err}. Fix: lower data.n or "
            "data.seq_len, or use a longer corpus (data=text data.path=FILE, or data=c4)"
        ) from err


def _check_method(cfg: DictConfig, config: PreTrainedConfig | None) -> int | None:
    """The method's target, amount and options; returns how many modules it drops (None: layers unknown)."""
    if cfg.mode not in MODES:
        _fail("mode", cfg.mode, f"one of {MODES}", "mode=one_shot")
    m = cfg.method
    if m.target not in TARGETS:
        _fail("method.target", m.target, f"one of {TARGETS}", "method=attn (or block, mlp, joint)")
    if m.get("angular", "mean") not in ANGULAR_TOKENS:
        _fail("method.angular", m.angular, f"one of {ANGULAR_TOKENS}", "method.angular=mean")
    if m.consecutive and m.target != "block":
        _fail(
            "method.consecutive",
            True,
            f"false for target {m.target} (spans are of whole blocks)",
            "method=block, or method.consecutive=false",
        )
    if m.consecutive and cfg.criterion in MODEL_CRITERIA:
        _fail(
            "criterion",
            cfg.criterion,
            "a per-module criterion: a consecutive span is chosen by angular distance, not scores",
            "criterion=cosine, or method.consecutive=false",
        )
    if m.consecutive and cfg.mode == "iterative":
        _fail("method.consecutive", True, "false in iterative mode (a span is chosen once)", "mode=one_shot")
    if m.remove_residual and m.target != "attn":
        _fail(
            "method.remove_residual",
            True,
            f"false for target {m.target} (Table 6 removes attention residuals)",
            "method=attn, or method.remove_residual=false",
        )
    if m.get("budget") is not None:
        _check_budget(cfg)
        return None  # how many modules meet the budget is known once the scores and costs are
    if (m.n is None) == (m.ratio is None):
        _fail(
            "method.n",
            m.n,
            f"exactly one of method.n and method.ratio set (ratio={m.ratio})",
            "method.n=8 method.ratio=null, or method.n=null method.ratio=0.25",
        )
    total, left = _modules(m.target, config)
    limit = "" if left is None else f"..{left}"
    if m.ratio is not None:
        if isinstance(m.ratio, bool) or not 0 < m.ratio <= 1:
            _fail(
                "method.ratio", m.ratio, "a fraction in (0, 1] of the target's modules", "method.ratio=0.25"
            )
        if total is None:
            return None
        count = round(m.ratio * total)
        if not 1 <= count <= left:
            _fail(
                "method.ratio",
                m.ratio,
                f"a fraction that drops 1{limit} of this model's {total} {m.target} "
                f"modules (it gives {count})",
                f"a ratio between {1 / total:.3f} and {left / total:.3f}",
            )
        return count
    if isinstance(m.n, bool) or not isinstance(m.n, int):
        _fail("method.n", m.n, f"a whole number 1{limit}", "method.n=8")
    if m.n == 0:
        _fail(
            "method.n",
            0,
            f"1{limit}: n=0 drops nothing. The unpruned baseline is measured and recorded by "
            "every run (its record is <model>-baseline, method.target none)",
            "use method.n >= 1; for the baseline alone run any n and read its baseline record",
        )
    if m.n < 1 or (left is not None and m.n > left):
        _fail(
            "method.n",
            m.n,
            f"1{limit} for {m.target} on this model ({total} modules)",
            f"method.n={max(1, min(m.n, left or 1))}",
        )
    return m.n


def _check_budget(cfg: DictConfig) -> None:
    """`method.budget = {kind, target}` replaces n and ratio; picks sub-layers once, by one-shot scores."""
    m, b = cfg.method, cfg.method.budget
    if m.target not in BUDGET_TARGETS:
        _fail("method.target", m.target, f"one of {BUDGET_TARGETS} with a budget", "method=joint")
    if m.n is not None or m.ratio is not None:
        _fail("method.n", m.n, f"null with a budget (and method.ratio null, got {m.ratio})", "method.n=null")
    if cfg.mode != "one_shot" or m.consecutive or m.remove_residual:
        _fail("mode", cfg.mode, "one_shot, no span, no residual removal with a budget", "mode=one_shot")
    target = b.get("target")
    if isinstance(target, bool) or not isinstance(target, int | float):
        _fail("method.budget.target", target, "a number", "method.budget.target=1.2")
    try:
        Budget(b.get("kind"), float(target))
    except ValueError as err:  # Budget names the field, the value, the range and the fix
        raise ConfigError(str(err)) from None


def _check_heal(cfg: DictConfig) -> None:
    """The `heal` group (LoRA, heal.py): whole positive sizes, a positive rate, no quantized weights."""
    h = cfg.get("heal")
    if h is None or not h.enabled:
        return
    for name in ("rank", "steps", "batch_size", "n", "seq_len"):
        value = h.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"heal.{name}", value, "a whole number >= 1", f"heal.{name}=8")
    if isinstance(h.lr, bool) or not isinstance(h.lr, int | float) or not 0 < h.lr < 1:
        _fail("heal.lr", h.lr, "a learning rate in (0, 1)", "heal.lr=3e-4")
    if cfg.get("quant") is not None and cfg.quant.get("scheme", "none") != "none":
        _fail("heal", "lora", "heal=none with quantized weights (LoRA trains float weights)", "quant=none")


def _modules(target: str, config: PreTrainedConfig | None) -> tuple[int | None, int | None]:
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


def stream_cache_bytes(config: PreTrainedConfig, n: int, seq_len: int, dtype: str) -> int:
    """Host memory of an iterative drop's `StreamCache`: every layer's input for every calibration token."""
    itemsize = models.DTYPES[dtype].itemsize
    return config.num_hidden_layers * n * seq_len * config.hidden_size * itemsize


def angular_bytes(config: PreTrainedConfig, batch_size: int, seq_len: int) -> int:
    """Device memory of the angular distances: the unit stream at every layer boundary of a batch, float32."""
    return (config.num_hidden_layers + 1) * batch_size * seq_len * config.hidden_size * 4


def _check_memory(cfg: DictConfig, config: PreTrainedConfig | None, iterative: bool, angular: bool) -> None:
    if config is None:
        return
    d = cfg.data
    gib = 2**30
    if iterative:  # drop.iterative_drop keeps the StreamCache on the CPU
        need = stream_cache_bytes(config, d.n, d.seq_len, cfg.model.dtype)
        have = psutil.virtual_memory().available
        if need > have:
            per_sample = need // d.n
            _fail(
                "data.n",
                d.n,
                f"at most {have // per_sample} samples of {d.seq_len} tokens here: the iterative "
                f"re-scoring cache needs {need / gib:.1f} GiB of RAM, {have / gib:.1f} GiB are free",
                "lower data.n or data.seq_len, or use mode=one_shot",
            )
    if angular:
        need = angular_bytes(config, cfg.batch_size, d.seq_len)
        have = _free_bytes(models.device_for(str(cfg.device)))
        if need > have:
            _fail(
                "batch_size",
                cfg.batch_size,
                f"a batch whose angular streams fit: they need {need / gib:.1f} "
                f"GiB, {have / gib:.1f} GiB are free on {cfg.device}",
                "batch_size=1, or a shorter data.seq_len",
            )


def _free_bytes(device: str) -> int:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return psutil.virtual_memory().available
