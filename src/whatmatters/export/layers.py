"""What each decoder layer of a pruned model becomes in an exported file, one rule for every format.

A plan indexes the original layers. A layer that lost both its attention and its MLP adds nothing: it is
left out (engines that read per-layer configs mishandle a layer with neither). Every other kept layer is
written with the sub-layers it still has; how a format spells a missing sub-layer is the format's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel

from whatmatters.adapters import adapter_for
from whatmatters.method.plans import Plan

# Families whose decoder layer is the Llama one (RMSNorm, SwiGLU MLP, rotary q/k, no biases): what both the
# GGUF `llama`/`deci` architectures and the `nemotron-nas` layout describe.
LLAMA_FAMILY = ("llama", "mistral")


class ExportError(ValueError):
    """A model or plan a format cannot express; the message names the limit and the fix."""


@dataclass(frozen=True)
class ExportLayer:
    """One written layer: its original index, its position in the pruned model's layer list, what it keeps."""

    source: int
    position: int
    attn: bool
    mlp: bool


def model_plan(model: PreTrainedModel) -> Plan:
    """The plan a pruned model records (an unpruned model: the empty plan)."""
    recorded = getattr(model.config, "drop_plan", None)
    if recorded is not None:
        return Plan.from_dict(recorded)
    return Plan(len(adapter_for(model).layers(model)))


def export_layers(plan: Plan) -> list[ExportLayer]:
    """The layers to write, in order; a layer with neither attention nor MLP goes, like a dropped block."""
    if plan.remove_residual and plan.attn:
        raise ExportError(
            "The plan drops attention with its residual (remove_residual, the Table 6 ablation): no serving "
            "format has a layer whose attention output replaces the stream. Export a plan without it."
        )
    kept = [i for i in range(plan.num_layers) if i not in plan.blocks]
    layers = [ExportLayer(i, pos, i not in plan.attn, i not in plan.mlp) for pos, i in enumerate(kept)]
    return [layer for layer in layers if layer.attn or layer.mlp]


def check_llama_family(model: PreTrainedModel) -> None:
    """Refuse what the Llama layer of both formats cannot hold: another family, biases, rope scaling."""
    config = model.config
    family = adapter_for(model).family
    stock = config.model_type.removeprefix("whatmatters_")
    problems = []
    if stock not in LLAMA_FAMILY or family != "llama":
        problems.append(f"model_type {stock!r} (supported: {LLAMA_FAMILY})")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("attention or MLP biases")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config.hidden_act!r} (SwiGLU needs silu)")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r} (only unscaled rotary positions are written)")
    if problems:
        raise ExportError(
            "This exporter writes Llama-layout models (RMSNorm, SwiGLU, unscaled rope, no biases); this "
            f"model has {', '.join(problems)}. Export a Llama-family model, or extend whatmatters/export."
        )
