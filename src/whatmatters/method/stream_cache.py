"""Re-running only the top of a model: the residual stream entering each layer, cached from the last pass,
and a pass that starts at layer l from that cache.

Dropping a module of layer l leaves every layer below l unchanged, so an iterative drop re-scores from layer
l on (`scores.compute_scores`), and the loss criterion measures each candidate's removal from its own layer
on (`loss_scores`); both run their partial passes through `from_layer` and refill the cache with
`caching_inputs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import Tensor, nn

from whatmatters.adapters import adapter_for


def hidden_input(args: tuple, kwargs: dict) -> Tensor:
    """The hidden states a decoder layer (or its norm) is called with, positional or keyword."""
    return args[0] if args else kwargs["hidden_states"]


class Skip(nn.Module):
    """Stands in for a decoder layer that does not run: below a restart point, or removed (loss criterion)."""

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return hidden_states


@dataclass
class StreamCache:
    """The residual stream entering each layer, per calibration batch, from the last pass.

    Dropping a module of layer l leaves every layer below l unchanged, so an iterative drop can
    re-score from layer l on, starting from the cached input of layer l (kept on the CPU).
    """

    inputs: dict[int, list[Tensor]] = field(default_factory=dict)


@contextlib.contextmanager
def from_layer(
    model: nn.Module, start: int, restart: list[Tensor] | None, batch: list[int]
) -> Iterator[None]:
    """Run only layers >= `start`, fed the cached stream entering layer `start` (batch index in `batch[0]`).

    With `restart=None` every layer runs. Layers below `start` become identities, so their cost is nil. The
    injecting hook is prepended: every other hook on layer `start` (scoring, caching) sees the cached stream.
    """
    if restart is None:
        yield
        return
    layers = adapter_for(model).layers(model)
    skipped = [layers[i] for i in range(start)]
    for i in range(start):
        layers[i] = Skip()

    def inject(module, args, kwargs):
        h = restart[batch[0]].to(hidden_input(args, kwargs).device)
        return ((h, *args[1:]), kwargs) if args else (args, kwargs | {"hidden_states": h})

    handle = layers[start].register_forward_pre_hook(inject, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()
        for i, layer in enumerate(skipped):
            layers[i] = layer


@contextlib.contextmanager
def caching_inputs(model: nn.Module, cache: StreamCache | None, start: int) -> Iterator[None]:
    """Store each layer's input (layers >= `start`) in `cache`, one CPU tensor per batch (None: nothing)."""
    handles = []
    for i, layer in enumerate(adapter_for(model).layers(model)):
        if cache is None or i < start:
            continue

        def store(module, args, kwargs, i=i):
            cache.inputs.setdefault(i, []).append(hidden_input(args, kwargs).detach().cpu())

        handles.append(layer.register_forward_pre_hook(store, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
