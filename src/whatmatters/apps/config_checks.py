"""The field checks behind `validate.check`: options, calibration data, healing and memory, from the config,
the model's config.json and the machine. Each failure raises `ConfigError` naming the field, the value, the
valid range and the fix.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

import psutil
import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedConfig

from whatmatters import data, models
from whatmatters.adapters import KINDS as BRANCH_KINDS
from whatmatters.adapters import adapter_for
from whatmatters.method import heal, repair
from whatmatters.method.criteria import criteria

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A config value out of range; the message names the field, the value, the valid range and the fix."""


def fail(field: str, value: Any, valid: str, fix: str) -> NoReturn:
    """Raise the one message shape every check uses: field=value, the valid range, the fix."""
    raise ConfigError(f"{field}={value!r} is not valid: {valid}. Fix: {fix}")


def check_common(cfg: DictConfig) -> None:
    """Criterion, batch size, dtype, device and device map: the options every app shares."""
    if cfg.criterion not in criteria():
        fail("criterion", cfg.criterion, f"one of {criteria()}", "criterion=cosine (the paper's)")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        fail("batch_size", cfg.batch_size, "a whole number >= 1", "batch_size=1")
    m = cfg.model
    if m.dtype not in models.DTYPES:
        fail(
            "model.dtype",
            m.dtype,
            f"one of {sorted(models.DTYPES)}",
            "model.dtype=bfloat16 on a GPU, float32 on CPU",
        )
    device = str(cfg.device)
    if not DEVICE.match(device):
        fail("device", device, "auto, cpu, mps, cuda or cuda:N", "device=auto")
    if device.startswith("cuda"):
        have = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= have:
            valid = f"a GPU index below {have}" if have else "cpu or auto: this machine has no CUDA GPU"
            fail("device", device, valid, "device=auto (picks the GPU when there is one)")
    device_map = m.get("device_map")
    if device_map is not None and not isinstance(device_map, DictConfig) and device_map != "auto":
        fail(
            "model.device_map",
            device_map,
            "null, auto, or a {module: device} mapping",
            "model.device_map=auto",
        )


def check_data(cfg: DictConfig, config: PreTrainedConfig | None) -> None:
    """The calibration source and size, against the model's context and (local text) the corpus."""
    d = cfg.data
    if d.source not in data.SOURCES:
        fail("data.source", d.source, f"one of {data.SOURCES}", "data=lee (offline) or data=c4 (the paper's)")
    for field in ("n", "seq_len"):
        value = d[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(
                f"data.{field}", value, "a whole number >= 1", f"data.{field}={16 if field == 'n' else 2048}"
            )
    context = getattr(config, "max_position_embeddings", None) if config is not None else None
    if context is not None and d.seq_len > context:
        fail(
            "data.seq_len",
            d.seq_len,
            f"1..{context} (the model's context, max_position_embeddings)",
            f"data.seq_len={min(2048, context)}",
        )
    if d.source in ("lee", "hellaswag", "text", "tokens"):
        check_corpus(cfg)


def check_corpus(cfg: DictConfig) -> None:
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


def check_heal(cfg: DictConfig) -> None:
    """The `heal` group (heal.py): its kind, whole positive sizes, a positive rate, no quantized weights."""
    h = cfg.get("heal")
    if h is None or not h.enabled:
        return
    kind = h.get("kind", "lora")
    if kind not in heal.KINDS:
        fail("heal.kind", kind, f"one of {heal.KINDS}", "heal=lora or heal=last_layers")
    size = "rank" if kind == "lora" else "layers"
    for name in (size, "steps", "batch_size", "n", "seq_len"):
        value = h.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(f"heal.{name}", value, "a whole number >= 1", f"heal.{name}=8")
    if isinstance(h.lr, bool) or not isinstance(h.lr, int | float) or not 0 < h.lr < 1:
        fail("heal.lr", h.lr, "a learning rate in (0, 1)", "heal.lr=3e-4")
    if cfg.get("quant") is not None and cfg.quant.get("scheme", "none") != "none":
        fail("heal", kind, "heal=none with quantized weights (healing trains float weights)", "quant=none")


def check_repair(cfg: DictConfig, config: PreTrainedConfig | None) -> None:
    """The `repair` group (repair.py): its kind, sizes and ridge; fused into float weights of a family whose
    branches end in their out_proj, on a drop that keeps the residual stream."""
    r = cfg.get("repair")
    kind = None if r is None else r.get("kind")
    if kind not in repair.KINDS:
        fail("repair.kind", kind, f"one of {repair.KINDS}", "repair=none, repair=linear or repair=magnitude")
    if kind == "none":
        return
    for name in ("n", "seq_len", "batch_size"):
        value = r.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(f"repair.{name}", value, "a whole number >= 1", f"repair.{name}=16")
    ridge = r.get("ridge", 0.0)
    if isinstance(ridge, bool) or not isinstance(ridge, int | float) or ridge < 0:
        fail("repair.ridge", ridge, "a number >= 0 (lam = ridge x trace(H'H) / d)", "repair.ridge=1e-4")
    quantized_first = cfg.get("quant") is not None and cfg.quant.get("order") == "quant_then_drop"
    if quantized_first and cfg.quant.get("scheme", "none") != "none":
        fail("repair", kind, "repair on float weights (fusing edits them)", "quant.order=drop_then_quant")
    if cfg.method.get("remove_residual"):
        fail("repair", kind, "a drop that keeps the residual stream", "method.remove_residual=false")
    adapter = adapter_for(config) if config is not None else None
    if adapter is not None and any(adapter.branch(k).post_norm for k in BRANCH_KINDS):
        fail("repair", kind, f"a family without a norm after out_proj, not {adapter.family}", "repair=none")


def stream_cache_bytes(config: PreTrainedConfig, n: int, seq_len: int, dtype: str) -> int:
    """Host memory of an iterative drop's `StreamCache`: every layer's input for every calibration token."""
    itemsize = models.DTYPES[dtype].itemsize
    return config.num_hidden_layers * n * seq_len * config.hidden_size * itemsize


def angular_bytes(config: PreTrainedConfig, batch_size: int, seq_len: int) -> int:
    """Device memory of the angular distances: the unit stream at every layer boundary of a batch, float32."""
    return (config.num_hidden_layers + 1) * batch_size * seq_len * config.hidden_size * 4


def check_memory(cfg: DictConfig, config: PreTrainedConfig | None, iterative: bool, angular: bool) -> None:
    """The re-scoring cache (host RAM) and the angular streams (the device) must fit where they live."""
    if config is None:
        return
    d = cfg.data
    gib = 2**30
    if iterative:  # drop.iterative_drop keeps the StreamCache on the CPU
        need = stream_cache_bytes(config, d.n, d.seq_len, cfg.model.dtype)
        have = psutil.virtual_memory().available
        if need > have:
            per_sample = need // d.n
            fail(
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
            fail(
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


def check_fidelity(cfg: DictConfig) -> None:
    """`fidelity`: null, or positive whole numbers of held-out sequences, tokens per sequence and batch."""
    spec = cfg.get("fidelity")
    if spec is None:
        return
    for name, fix in (("sequences", 64), ("seq_len", 128), ("batch_size", 8)):
        value = spec.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "seq_len" else 1):
            low = 2 if name == "seq_len" else 1
            fail(
                f"fidelity.{name}",
                value,
                f"a whole number >= {low}",
                f"fidelity.{name}={fix} (or fidelity=null)",
            )
