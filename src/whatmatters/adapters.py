"""Where each model family keeps its decoder layers, attention, MLP and norms.

Every supported family uses a stock transformers modeling file; an adapter only names the
submodules, so scoring and surgery never depend on one family's code. A decoder layer is

    h = h + out(attn(norm(h)))      # attention branch
    h = h + out(mlp(norm(h)))       # MLP branch

where `out` is the identity for Llama-style layers and an extra RMSNorm for Gemma2/3
("post_attention_layernorm" / "post_feedforward_layernorm"). To add a family, register an
`Adapter` naming its modules under the config's `model_type` (see `register`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

Kind = Literal["attn", "mlp"]
KINDS: tuple[Kind, ...] = ("attn", "mlp")


class DroppedBranch(nn.Module):
    """Base of the parameter-free stand-ins that take a dropped branch's place (see surgery.py)."""


@dataclass(frozen=True)
class Branch:
    """One residual branch of a decoder layer: `h + post_norm(module(norm(h)))`."""

    norm: str  # its *input* is the residual stream X entering the branch
    module: str  # the attention or MLP module
    post_norm: str | None = None  # Gemma2/3 normalise the branch output before the add
    out_proj: str | None = None  # the last linear of `module`, which writes the branch into the stream

    @property
    def output(self) -> str:
        """The submodule whose output is the branch output added to the residual stream."""
        return self.post_norm or self.module

    @property
    def owned(self) -> tuple[str, ...]:
        """Every submodule that exists only for this branch (deleted with it)."""
        return (self.norm, self.module) + ((self.post_norm,) if self.post_norm else ())


@dataclass(frozen=True)
class Adapter:
    """The names of one family's decoder-layer submodules."""

    family: str
    attn: Branch
    mlp: Branch
    layers_path: str = "model.layers"

    def branch(self, kind: Kind) -> Branch:
        return self.attn if kind == "attn" else self.mlp

    def has(self, layer: nn.Module, kind: Kind) -> bool:
        """Whether `layer` still runs its `kind` branch (False once surgery dropped it)."""
        return not isinstance(getattr(layer, self.branch(kind).module), DroppedBranch)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder layers of a `*ForCausalLM` model."""
        node = model
        for name in self.layers_path.split("."):
            node = getattr(node, name)
        if not isinstance(node, nn.ModuleList):
            raise TypeError(f"{self.family}: {self.layers_path} is {type(node).__name__}, not a ModuleList")
        return node


_LLAMA = Adapter(
    family="llama",
    attn=Branch(norm="input_layernorm", module="self_attn", out_proj="self_attn.o_proj"),
    mlp=Branch(norm="post_attention_layernorm", module="mlp", out_proj="mlp.down_proj"),
)
_GEMMA2 = Adapter(
    family="gemma2",
    attn=Branch(norm="input_layernorm", module="self_attn", post_norm="post_attention_layernorm"),
    mlp=Branch(norm="pre_feedforward_layernorm", module="mlp", post_norm="post_feedforward_layernorm"),
)

# model_type (config.model_type) -> adapter. Llama, Mistral, Qwen2/3 and Gemma(1) share one layout.
ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2,
}


def register(model_type: str, adapter: Adapter) -> None:
    """Support a new family: name its submodules once, and scoring and surgery work on it."""
    ADAPTERS[model_type] = adapter


class UnsupportedArchitectureError(ValueError):
    """The model's family has no adapter."""


def adapter_for(model_or_config: nn.Module | object) -> Adapter:
    """The adapter for a loaded model (or its config), with a clear error for unknown families."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"Unsupported architecture: model_type={model_type!r}. Supported: {sorted(ADAPTERS)}. "
            "To add a family, call whatmatters.adapters.register(model_type, Adapter(...)) naming its "
            "decoder layers, attention, MLP and norms (see whatmatters/adapters.py)."
        ) from None
