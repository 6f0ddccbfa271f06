"""Weight quantization with torchao, composed with dropping in either order (the paper's Table 11).

A scheme quantizes the `nn.Linear` weights of the decoder layers only: the embedding and the (often tied)
LM head stay in full precision, as AWQ and GPTQ leave them. Quantization and dropping commute on the
weights (a weight-only scheme quantizes each matrix on its own), so the two orders differ in one thing:
`quant_then_drop` *scores* the quantized model, so its plan can differ; `drop_then_quant` drops what the
full-precision scores say, then quantizes what is left.

A quantized model also carries transformers' `TorchAoConfig`, so `save_pretrained` writes torchao's
safetensors format and `AutoModelForCausalLM.from_pretrained` restores the same tensor subclasses; a
pruned one restores its dropped modules as dropped (see surgery.py).

What runs fast where (torchao 0.18, checked in its source, and with torch 2.13's CPU wheel):

* `int8` (weight-only, per row): the weight is stored in int8 but every linear casts it to the activation
  dtype and runs a float matmul. A dequantizing fallback on every device: never timed as "int8".
* `int4` (weight-only, symmetric, per group): 4-bit values, stored one per int8 byte and dequantized on
  every call. torchao's packed int4 kernels (tinygemm, mslk) need CUDA (or XPU/NPU); its CPU int4 kernels
  (KleidiAI, the torchao lowbit library) are not in the x86 CPU wheel. Not timed; weight bytes are the
  stored bytes (8 bits a value), with the packed 4-bit size beside them.
* `w8a8` (int8 weights and dynamically quantized int8 activations): a real integer matmul on CPU and CUDA.
* AWQ (`torchao.prototype.awq`) needs a base tensor that takes an activation pre-scale: in 0.18 only the
  int4 tensors (CUDA/XPU/NPU) and the int8 one. No 4-bit AWQ on CPU, so it is not offered here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from scipy.stats import kendalltau
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from transformers import PreTrainedModel

from whatmatters.adapters import adapter_for
from whatmatters.method.plans import make_plan
from whatmatters.method.scores import Scores, compute_scores

if TYPE_CHECKING:
    from torchao.core.config import AOBaseConfig

ORDERS = ("drop_then_quant", "quant_then_drop")


@dataclass(frozen=True)
class Scheme:
    """A torchao recipe, its weight bits, and the device types where its linear runs a quantized kernel."""

    bits: int
    build: Callable[[int | None], AOBaseConfig]  # group_size -> torchao config
    kernel_devices: tuple[str, ...]
    grouped: bool = False  # whether `group_size` applies


def _ao():  # noqa: ANN202 - the torchao.quantization module
    """torchao, imported only to quantize: its import costs seconds and prints CUDA library warnings."""
    import torchao.quantization

    return torchao.quantization


# `set_inductor_config=False`: quantizing must not change torch.compile's global settings as a side effect.
SCHEMES: dict[str, Scheme] = {
    "int8": Scheme(
        8, lambda _: _ao().Int8WeightOnlyConfig(granularity=_ao().PerRow(), set_inductor_config=False), ()
    ),
    "int4": Scheme(
        4,
        lambda group: _ao().IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=_ao().PerGroup(group)),
        (),
        grouped=True,
    ),
    "w8a8": Scheme(
        8, lambda _: _ao().Int8DynamicActivationInt8WeightConfig(set_inductor_config=False), ("cpu", "cuda")
    ),
}


@dataclass(frozen=True)
class QuantSpec:
    """The `quant` config group: which scheme, in which order relative to dropping, and its group size."""

    scheme: str = "none"
    order: str = "drop_then_quant"
    group_size: int | None = None

    def __post_init__(self) -> None:
        valid = ("none", *SCHEMES)
        if self.scheme not in valid:
            raise ValueError(
                f"quant.scheme={self.scheme!r} is not a scheme; use one of {valid} (conf/quant/)"
            )
        if self.order not in ORDERS:
            raise ValueError(f"quant.order={self.order!r} is not an order; use one of {ORDERS}")
        grouped = self.scheme != "none" and SCHEMES[self.scheme].grouped
        if grouped and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise ValueError(
                f"quant.group_size={self.group_size!r}: scheme {self.scheme} needs a positive integer that "
                "divides every linear's input size (e.g. quant.group_size=32)"
            )
        if not grouped and self.group_size is not None:
            raise ValueError(
                f"quant.group_size={self.group_size} is not used by scheme {self.scheme}; set it to null"
            )

    @classmethod
    def from_config(cls, cfg) -> QuantSpec:
        """From a run config's `quant` group; a config without one means no quantization."""
        q = cfg.get("quant") or {}
        return cls(q.get("scheme", "none"), q.get("order", "drop_then_quant"), q.get("group_size"))

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    @property
    def before_drop(self) -> bool:
        """Whether to quantize before scoring and dropping (else after)."""
        return self.enabled and self.order == "quant_then_drop"

    def has_kernel(self, device: str | torch.device) -> bool:
        """Whether this scheme's linear runs a quantized kernel on `device` (else timing it means little)."""
        return not self.enabled or torch.device(device).type in SCHEMES[self.scheme].kernel_devices

    def torchao_config(self) -> AOBaseConfig:
        return SCHEMES[self.scheme].build(self.group_size)


def quantize(model: PreTrainedModel, spec: QuantSpec) -> PreTrainedModel:
    """Quantize the decoder layers' linear weights of `model` (original or pruned) in place; returns it.

    The model also gets transformers' torchao quantizer and config, which is what makes `save_pretrained`
    write the tensor subclasses and `from_pretrained` read them back.
    """
    if not spec.enabled:
        return model
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError("This model is already quantized; quantize the full-precision model once")
    layers = adapter_for(model).layers(model)
    if spec.group_size:
        for name, module in layers.named_modules():
            if isinstance(module, nn.Linear) and module.in_features % spec.group_size:
                raise ValueError(
                    f"quant.group_size={spec.group_size} does not divide the input size {module.in_features} "
                    f"of layers.{name}; choose a divisor of it (e.g. 32)"
                )
    config = spec.torchao_config()
    _ao().quantize_(layers, config)
    from transformers import TorchAoConfig
    from transformers.quantizers.quantizer_torchao import TorchAoHfQuantizer

    qconfig = TorchAoConfig(quant_type=config, modules_to_not_convert=["lm_head"])
    model.hf_quantizer = TorchAoHfQuantizer(qconfig, pre_quantized=False)
    model.config.quantization_config = qconfig
    return model


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a torchao subclass holds its inner tensors (int data, scales, zero points)."""
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters as stored (quantized data and scales included), tied weights once."""
    return sum(_tensor_bytes(p) for p in model.parameters())  # parameters() already yields a tied one once


def packed_weight_bytes(model: nn.Module, spec: QuantSpec) -> int:
    """Weight bytes with every quantized value packed at the scheme's bits (what a packed kernel stores)."""
    total = 0
    for p in model.parameters():
        data = getattr(p, "qdata", None) if is_traceable_wrapper_subclass(p) else None
        if data is None:
            total += _tensor_bytes(p)
        else:
            total += _tensor_bytes(p) - _tensor_bytes(data) + data.numel() * SCHEMES[spec.scheme].bits // 8
    return total


def describe(model: nn.Module, spec: QuantSpec) -> dict:
    """A record's weight sizes: bytes as stored and, when quantized, as packed at the scheme's bits."""
    out = {"weight_bytes": weight_bytes(model)}
    if spec.enabled:
        out["packed_weight_bytes"] = packed_weight_bytes(model, spec)
    return out


def compare_scores(full: Scores, quantized: Scores, attn_n: Sequence[int]) -> dict:
    """Do the scores survive quantization? Kendall tau between the two rankings of each kind, and, for each
    n, the attention layers an Attn-n one-shot plan drops under each (and how many they share)."""
    tau = {}
    for kind in ("attn", "mlp", "block"):
        pairs = [(a, b) for a, b in zip(getattr(full, kind), getattr(quantized, kind), strict=True)]
        pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
        tau[kind] = float(kendalltau(*zip(*pairs, strict=True)).statistic)
    plans = []
    for n in attn_n:
        a, b = (sorted(make_plan(s, "attn", n=n).attn) for s in (full, quantized))
        plans.append({"n": n, "full": a, "quantized": b, "overlap": len(set(a) & set(b))})
    return {"kendall_tau": tau, "attn_plans": plans}


def score_stability(
    model: PreTrainedModel, ids: torch.Tensor, spec: QuantSpec, attn_n: Sequence[int], **score_kwargs
) -> dict:
    """Score `model` in full precision, quantize it with `spec` (in place), score it again, compare.

    The same calibration ids and scorer settings (`score_kwargs`, see `compute_scores`) for both passes.
    """
    if not spec.enabled:
        raise ValueError(
            "quant.scheme=none: choose a scheme to compare with full precision (e.g. quant=int4)"
        )
    full = compute_scores(model, ids, angular=False, **score_kwargs)
    quantized = compute_scores(quantize(model, spec), ids, angular=False, **score_kwargs)
    out = compare_scores(full, quantized, attn_n)
    lists = {
        name: {k: getattr(s, k) for k in ("attn", "mlp", "block")}
        for name, s in (("full", full), ("quantized", quantized))
    }
    return out | {"scheme": spec.scheme, "group_size": spec.group_size} | lists


def stability_markdown(result: dict, title: str) -> str:
    """The score-stability result as a short markdown report (tau per kind, Attn-n plans side by side)."""
    taus = result["kendall_tau"]
    lines = [
        f"# {title}",
        "",
        "Kendall tau between the per-layer importance rankings of the full-precision and the quantized "
        "model (1 = same order), and the attention layers a one-shot Attn-n plan drops under each.",
        "",
        "| kind | Kendall tau |",
        "| --- | ---: |",
        *(f"| {kind} | {tau:.3f} |" for kind, tau in taus.items()),
        "",
        "| n | full precision drops | quantized drops | shared |",
        "| ---: | --- | --- | ---: |",
        *(
            f"| {p['n']} | {p['full']} | {p['quantized']} | {p['overlap']}/{p['n']} |"
            for p in result["attn_plans"]
        ),
        "",
    ]
    return "\n".join(lines)
