"""Cut a stock transformers model down to a drop plan, for real: fewer parameters, fewer KV-cache slots.

`apply_plan` keeps the stock modeling code and its forward. A dropped attention or MLP branch loses every
module it owns (`Branch.owned`); parameter-free stand-ins take their place, so the stock `h = h + branch(h)`
adds zero (one add, no weights). Dropped blocks leave the layer list. The model and its config then become
their family's `Pruned*` subclasses (same instance, same modules), which

* record the plan in `config.drop_plan` (original layer numbers), while `config.num_hidden_layers` and
  `config.layer_types` describe the kept blocks, so the stock forward runs exactly those;
* hand KV caches a view of the config with one layer per kept attention (see `_PrunedConfig`);
* rebuild the cut model in `__init__`, so `save_pretrained` and `AutoModelForCausalLM.from_pretrained`
  round-trip without remote code once `whatmatters` is imported (it registers the classes).

A pruned model can be cut further by a plan that contains its own (plans index the original layers).
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from whatmatters.adapters import ADAPTERS, Adapter, Branch, DroppedBranch, adapter_for, register
from whatmatters.method.plans import Plan

PREFIX = "whatmatters_"  # model_type of a pruned model = PREFIX + its family's model_type


class DroppedAttention(DroppedBranch):
    """Stands in for a deleted attention: its branch adds nothing; it has no weights and no cache slot."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        # A 0-dim zero broadcasts in the stock `residual + out`: no activation-sized allocation.
        return hidden_states.new_zeros(()), None


class DroppedMLP(DroppedBranch):
    """Stands in for a deleted MLP: its branch adds nothing; it has no weights."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(())


def apply_plan(model: PreTrainedModel, plan: Plan) -> PreTrainedModel:
    """Cut `model` in place to `plan` (indexed by the original layers) and return it.

    An already pruned model can be cut further by a plan that contains its own: that is how an
    iterative drop removes one module at a time without reloading the original.
    """
    config = model.config
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    pruned = isinstance(config, _PrunedConfig)
    done = (
        Plan.from_dict(config.drop_plan)
        if pruned
        else Plan(len(layers), remove_residual=plan.remove_residual)
    )
    _check_extends(done, plan)
    positions = _kept_layers(done)  # original index of each current layer
    for i in sorted(set(plan.blocks) - set(done.blocks), reverse=True):
        del layers[positions.index(i)]
    kept = _kept_layers(plan)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[positions.index(i)] for i in kept]
    config.drop_plan = plan.to_dict()
    if not pruned:
        # Same instance, same modules: the subclasses only add how to cache, save and reload a cut model.
        config.__class__, model.__class__ = pruned_classes(config.model_type)
    _drop_branches(model, adapter, plan)
    return model


def _check_extends(done: Plan, plan: Plan) -> None:
    """`plan` must index the same original model and keep every cut already made."""
    if plan.num_layers != done.num_layers:
        raise ValueError(f"The plan is for a {plan.num_layers}-layer model; this model has {done.num_layers}")
    for name in ("attn", "mlp", "blocks"):
        if not set(getattr(done, name)) <= set(getattr(plan, name)):
            raise ValueError(
                f"This model is already pruned ({name} {list(getattr(done, name))}); plans index the "
                "original layers, so a further plan must contain the cuts already made"
            )
    if plan.remove_residual != done.remove_residual and done.attn:
        raise ValueError("Cannot mix attention drops with and without their residual branch in one model")


def _kept_layers(plan: Plan) -> list[int]:
    """Original indices of the decoder layers that survive the plan, in order."""
    return [i for i in range(plan.num_layers) if i not in plan.blocks]


def _attention_layers(plan: Plan) -> list[int]:
    """Positions, among the kept layers, of those that still run an attention (so need a cache slot)."""
    dropped = set() if plan.remove_residual else set(plan.attn)
    return [pos for pos, i in enumerate(_kept_layers(plan)) if i not in dropped]


def _drop_branches(model: PreTrainedModel, adapter: Adapter, plan: Plan) -> None:
    """Cut the dropped attention/MLP branches of a model whose layer list holds only the kept blocks."""
    layers = adapter.layers(model)
    for layer, i in zip(layers, _kept_layers(plan), strict=True):
        if i in plan.attn and plan.remove_residual:
            layer.forward = functools.partial(_forward_without_attn_residual, layer, adapter)
        elif i in plan.attn:
            _replace(layer, adapter.attn, DroppedAttention())
        if i in plan.mlp:
            _replace(layer, adapter.mlp, DroppedMLP())
    # Attentions index the cache by `layer_idx`: number the kept ones 0..K-1, the slots of the cache view.
    for slot, pos in enumerate(_attention_layers(plan)):
        layers[pos].get_submodule(adapter.attn.module).layer_idx = slot


def _replace(layer: nn.Module, branch: Branch, stand_in: nn.Module) -> None:
    """Delete every module the branch owns: its main module becomes `stand_in`, its norms the identity."""
    for name in branch.owned:
        layer.set_submodule(name, stand_in if name == branch.module else nn.Identity())


def _forward_without_attn_residual(
    layer: nn.Module, adapter: Adapter, hidden_states: torch.Tensor, **kwargs
) -> torch.Tensor:
    """Table 6 ablation: the attention output replaces the residual stream, h = post(attn(norm(X)))."""
    attn, mlp = adapter.attn, adapter.mlp

    def run(name: str | None, h: torch.Tensor) -> torch.Tensor:
        return layer.get_submodule(name)(h) if name else h

    h, _ = layer.get_submodule(attn.module)(hidden_states=run(attn.norm, hidden_states), **kwargs)
    h = run(attn.post_norm, h)
    return h + run(mlp.post_norm, run(mlp.module, run(mlp.norm, h)))


class _PrunedConfig:
    """Config mixin of a pruned model: sizes every KV cache to the kept attention layers.

    transformers builds each KV cache (`DynamicCache`, `StaticCache`; in `generate` and in the forward) from
    `config.get_text_config(decoder=True)`, while the stock forward reads `num_hidden_layers` and
    `layer_types` from the config itself. So the cache, and only the cache, gets a copy describing one
    layer per kept attention, in order: slot k belongs to the attention renumbered `layer_idx=k`.
    """

    stock_class: type[PreTrainedConfig]  # set per family by `pruned_classes`

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        config = super().get_text_config(decoder=decoder, encoder=encoder)
        plan = getattr(self, "drop_plan", None)
        if not decoder or plan is None:
            return config
        attention = _attention_layers(Plan.from_dict(plan))
        view = copy.copy(config)
        view.__class__ = self.stock_class
        view.num_hidden_layers = len(attention)
        if getattr(config, "layer_types", None) is not None:
            view.layer_types = [config.layer_types[pos] for pos in attention]
        return view


class _PrunedModel:
    """Model mixin of a pruned model: `__init__` rebuilds the cut model that `config.drop_plan` records."""

    def __init__(self, config: PreTrainedConfig, *args, **kwargs) -> None:
        plan = Plan.from_dict(config.drop_plan)
        kept = len(_kept_layers(plan))
        if kept != config.num_hidden_layers:
            raise ValueError(
                f"config.drop_plan keeps {kept} of {plan.num_layers} blocks, but the config has "
                f"num_hidden_layers={config.num_hidden_layers}: the recorded plan does not fit this model"
            )
        # The config lists only the kept blocks, so the stock __init__ builds just those.
        super().__init__(config, *args, **kwargs)
        _drop_branches(self, adapter_for(config), plan)

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # A stock model initialises missing weights at random; a pruned one must not: missing or unexpected
        # weights mean the recorded plan is not the one these weights were cut with.
        super()._adjust_missing_and_unexpected_keys(loading_info)
        missing, unexpected = sorted(loading_info.missing_keys), sorted(loading_info.unexpected_keys)
        if missing or unexpected:
            raise ValueError(
                "The weights do not match config.drop_plan (was the plan edited?): "
                f"missing {missing}, unexpected {unexpected}"
            )


@functools.cache
def pruned_classes(model_type: str) -> tuple[type[PreTrainedConfig], type[PreTrainedModel]]:
    """The (config, model) classes of pruned `model_type` models, registered with the Auto classes."""
    stock_config = CONFIG_MAPPING[model_type]
    stock_model = MODEL_FOR_CAUSAL_LM_MAPPING[stock_config]
    config_cls = type(
        f"Pruned{stock_config.__name__}",
        (_PrunedConfig, stock_config),
        {"model_type": PREFIX + model_type, "stock_class": stock_config, "__module__": __name__},
    )
    model_cls = type(
        f"Pruned{stock_model.__name__}",
        (_PrunedModel, stock_model),
        {"config_class": config_cls, "__module__": __name__},
    )
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
    register(config_cls.model_type, ADAPTERS[model_type])
    return config_cls, model_cls


def register_auto_classes() -> None:
    """Let `AutoModelForCausalLM.from_pretrained` load pruned models of every supported family."""
    for model_type in list(ADAPTERS):
        if not model_type.startswith(PREFIX):
            pruned_classes(model_type)


# Importing this module is what lets `AutoModelForCausalLM.from_pretrained` load a saved pruned model (no
# remote code): `import whatmatters.method.surgery` (or anything that applies a plan) before loading one.
register_auto_classes()
