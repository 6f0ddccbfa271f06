"""Seam repair: a training-free fix of a pruned model, fused into its weights so it keeps its architecture.

The residual stream of a Llama-layout decoder is a sequence of writes, one per branch ("slot"):
slot 2i is layer i's attention, slot 2i + 1 its MLP, each adding `out_proj(...)` (o_proj, down_proj) to the
stream. A drop plan removes slots (a block removes both of its layer's). A *gap* is a maximal run of
removed slots; each is repaired on its own, on calibration text (`RepairSpec.n` x `seq_len` tokens of the
run's calibration source), after the drop and before any healing or evaluation.

`linear` (after ReplaceMe, Shopkhoev et al. 2025). For a gap whose slots run a..b, the *host* is the kept
slot a-1 just before it. With H its out_proj output and R the stream entering it, both in the pruned model
(earlier gaps already repaired), and Y the stream leaving slot b in the original model, one d x d map

    T = argmin_T ||H T - (Y - R)||^2 + lam ||T - I||^2 = (H'H + lam I)^-1 (H'(Y - R) + lam I)

with lam = `ridge` x trace(H'H) / d, makes R + H T stand in for what the gap wrote (ReplaceMe: the last kept
block's MLP output M_i and its attention-side stream Y_i, T = argmin ||M_i T - (L_{i+n} - Y_i)||). It is fused
exactly: out_proj(x) T = x (T'W)' + T'b, so W <- T'W and b <- T'b (float64, then the model's dtype). Removed
attention or MLP sub-layers are gaps like any other (a lone Attn-l gap is hosted by layer l-1's down_proj):
the map approximates the removed branch's write as a linear function of the host's write. A map from the
removed branch's *own* input (norm(h)) is not fusable: the RMSNorm's per-token scale and the residual term
would need a new matrix on the stream, so this form is not used. Departures from ReplaceMe: several gaps
are fitted in order, each on the stream the earlier repairs produce (ReplaceMe fits one span); the ridge
pulls T towards the identity (= no repair), not towards zero; a gap with no kept slot before it (layer 0's
attention) cannot be hosted and is left as cut, said in the record.

`magnitude` (after Prune&Comp, Chen et al. 2025, as we read it: estimate the magnitude gap a removal leaves
and close it by rescaling remaining weights offline). For each gap, alpha = mean token L2 norm of the
original's stream leaving the gap / that entering it (all calibration tokens). Scaling the stream entering
the gap's successor by alpha is what the removed slots did to its size; because every branch reads the
stream through an RMSNorm, and the final norm precedes lm_head, that is the same function (up to the norms'
eps) as scaling every kept out_proj after the gap by 1/alpha, which is what is fused: the embedding, tied to
lm_head in small models, stays untouched. Departures: alpha comes from the original model, one-shot, not an
iterative prune-and-compensate loop re-scored after each removal; a gap after the last kept write changes
nothing (the final norm is scale-invariant), said in the record.

Families with a post-branch norm (Gemma2/3: `Branch.post_norm`) are refused: the norm after out_proj breaks
both fusions. The Table 6 no-residual ablation is refused too (its stream is not a sum of writes).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from transformers import PreTrainedModel

from whatmatters.adapters import Adapter, adapter_for
from whatmatters.method.numbering import kept_layers
from whatmatters.method.plans import Plan
from whatmatters.method.stream_cache import hidden_input

KINDS = ("none", "linear", "magnitude")
SLOT_KINDS = ("attn", "mlp")  # slot 2i + k is layer i's SLOT_KINDS[k]


@dataclass(frozen=True)
class RepairSpec:
    """The `repair` config group (conf/repair/*.yaml)."""

    kind: str = "none"
    ridge: float = 1e-4  # linear: lam = ridge x trace(H'H) / d, towards T = I
    n: int = 16  # calibration samples of seq_len tokens (their own draw, like heal's)
    seq_len: int = 256
    batch_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RepairSpec:
        repair = cfg.get("repair")
        return cls() if repair is None else cls(**OmegaConf.to_container(repair, resolve=True))

    def to_dict(self) -> dict:
        """What determines a repair's numbers (the ridge only where it is used)."""
        values = asdict(self)
        return values if self.kind == "linear" else {k: v for k, v in values.items() if k != "ridge"}


@dataclass
class Gap:
    """A maximal run of removed slots `first`..`last` and what repairing it did."""

    first: int
    last: int
    host: int | None = None  # the kept slot written through (linear), None where there is none
    matrix: Tensor | None = None  # linear: T, d x d float64
    alpha: float | None = None  # magnitude: the norm ratio
    residual: dict = field(default_factory=dict)  # linear: ||H T - D||^2 at T = I and at the fit, / ||D||^2
    note: str = ""

    def describe(self) -> dict:
        names = f"{slot_name(self.first)}..{slot_name(self.last)}"
        info = {"gap": names, "host": slot_name(self.host) if self.host is not None else None}
        info |= {"alpha": self.alpha} if self.alpha is not None else {}
        return info | self.residual | ({"note": self.note} if self.note else {})


def slot_name(slot: int) -> str:
    return f"{SLOT_KINDS[slot % 2]} {slot // 2}"


def removed_slots(plan: Plan) -> set[int]:
    slots = {2 * i for i in plan.attn} | {2 * i + 1 for i in plan.mlp}
    return slots | {2 * i + k for i in plan.blocks for k in (0, 1)}


def gaps(plan: Plan) -> list[Gap]:
    """The maximal runs of removed slots, in stream order."""
    out: list[Gap] = []
    for slot in sorted(removed_slots(plan)):
        if out and out[-1].last == slot - 1:
            out[-1].last = slot
        else:
            out.append(Gap(slot, slot))
    return out


def check_repairable(model: PreTrainedModel, plan: Plan) -> Adapter:
    """The model's adapter, or ValueError where fusing into out_proj would not be exact."""
    adapter = adapter_for(model)
    if any(adapter.branch(k).post_norm or not adapter.branch(k).out_proj for k in SLOT_KINDS):
        raise ValueError(
            f"repair is not supported for the {adapter.family} family: a norm after each branch's out_proj "
            "(post_norm) breaks the exact fusion. Fix: repair=none, or a Llama-layout model"
        )
    if plan.remove_residual:
        raise ValueError("repair with method.remove_residual=true is not supported. Fix: repair=none")
    return adapter


def _module(model: nn.Module, adapter: Adapter, slot: int, part: str) -> nn.Module:
    """`part` of slot's branch ("norm" or "out_proj") in `model`, which may be pruned (plans index the
    original layers; the slot must be kept)."""
    position = kept_layers(model)[0].index(slot // 2)
    branch = adapter.branch(SLOT_KINDS[slot % 2])
    return adapter.layers(model)[position].get_submodule(getattr(branch, part))


@contextlib.contextmanager
def _capture(model: nn.Module, adapter: Adapter, points: dict[str, tuple[int, str]]) -> Iterator[dict]:
    """Record, per forward pass, the stream entering slot s (`(s, "stream")`; s = 2 x layers: leaving the last
    layer) or slot s's out_proj output (`(s, "write")`), as float64 [tokens, d] on the CPU."""
    seen: dict[str, list[Tensor]] = {name: [] for name in points}
    handles = []
    layers = adapter.layers(model)
    for name, (slot, what) in points.items():

        def keep(t: Tensor, name: str = name) -> None:
            seen[name].append(t.detach().reshape(-1, t.shape[-1]).to("cpu", torch.float64))

        if what == "write":
            module = _module(model, adapter, slot, "out_proj")
            handles.append(module.register_forward_hook(lambda m, a, out, keep=keep: keep(out)))
        elif slot == 2 * len(layers):
            handles.append(layers[-1].register_forward_hook(lambda m, a, out, keep=keep: keep(_first(out))))
        else:
            module = _module(model, adapter, slot, "norm")
            hook = lambda m, args, kwargs, keep=keep: keep(hidden_input(args, kwargs))  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _first(out: Tensor | tuple) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def _forward_all(model: PreTrainedModel, ids: Tensor, batch_size: int) -> None:
    device = next(model.parameters()).device
    for first in range(0, len(ids), batch_size):
        model(input_ids=ids[first : first + batch_size].to(device), use_cache=False)


def solve_map(gram: Tensor, cross: Tensor, ridge: float) -> Tensor:
    """T = (H'H + lam I)^-1 (H'D + lam I), lam = ridge x trace(H'H) / d: ridge least squares towards I."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    lam = ridge * torch.trace(gram) / gram.shape[0]
    return torch.linalg.solve(gram + lam * eye, cross + lam * eye)


def _fit_linear(
    pruned: PreTrainedModel, adapter: Adapter, gap: Gap, target: list[Tensor], ids: Tensor, spec: RepairSpec
) -> None:
    """Fit gap's T on the pruned model's current stream (earlier gaps repaired) and fuse it into the host."""
    host = gap.first - 1
    with _capture(pruned, adapter, {"h": (host, "write"), "r": (host, "stream")}) as seen:
        _forward_all(pruned, ids, spec.batch_size)
    d = target[0].shape[1]
    gram, cross, sq = torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0.0
    for h, r, y in zip(seen["h"], seen["r"], target, strict=True):
        diff = y - r
        gram += h.T @ h
        cross += h.T @ diff
        sq += float((diff * diff).sum())
    eye = torch.eye(d, dtype=torch.float64)
    matrix = solve_map(gram, cross, spec.ridge)

    def residual(t: Tensor) -> float:  # ||H T - D||^2 / ||D||^2 from the sums: tr(T'AT) - 2 tr(T'B) + ||D||^2
        return float((torch.trace(t.T @ gram @ t) - 2 * torch.trace(t.T @ cross) + sq) / sq)

    gap.host, gap.matrix = host, matrix
    gap.residual = {"residual_cut": residual(eye), "residual_fit": residual(matrix)}
    fuse_map(_module(pruned, adapter, host, "out_proj"), matrix)


def fuse_map(linear: nn.Linear, matrix: Tensor) -> None:
    """Make `linear`'s output x W' + b become (x W' + b) T: W <- T'W, b <- T'b (exact)."""
    weight = linear.weight
    weight.data = (matrix.T @ weight.data.to(torch.float64)).to(weight.dtype)
    if linear.bias is not None:
        linear.bias.data = (linear.bias.data.to(torch.float64) @ matrix).to(linear.bias.dtype)


def repair(
    pruned: PreTrainedModel, original: PreTrainedModel, ids: Tensor, spec: RepairSpec
) -> tuple[list[Gap], dict]:
    """Repair `pruned` (cut by its `config.drop_plan` from `original`) in place, weights only; returns the
    gaps (maps, norm ratios) and the record's summary. `original` is read, never changed."""
    if spec.kind not in KINDS[1:]:
        raise ValueError(
            f"repair.kind={spec.kind!r} is not valid here: one of {KINDS[1:]}. Fix: repair=linear"
        )
    plan = Plan.from_dict(pruned.config.drop_plan)
    adapter = check_repairable(pruned, plan)
    start = time.perf_counter()
    found = gaps(plan)
    if spec.kind == "linear":
        _repair_linear(pruned, original, adapter, found, ids, spec)
    else:
        _repair_magnitude(pruned, original, adapter, found, ids, spec, plan)
    summary = spec.to_dict() | {
        "gaps": [g.describe() for g in found],
        "tokens": int(ids.numel()),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return found, summary


def _repair_linear(
    pruned: PreTrainedModel, original: PreTrainedModel, adapter: Adapter, found: list[Gap], ids, spec
) -> None:
    """One pass of the original for every gap's target Y, then a fit (a pruned-model pass) per gap."""
    hosted = [g for g in found if g.first > 0]
    for g in found:
        if g.first == 0:
            g.note = "no kept write before it: left as cut"
    with _capture(original, adapter, {str(g.first): (g.last + 1, "stream") for g in hosted}) as targets:
        _forward_all(original, ids, spec.batch_size)
    for g in hosted:
        _fit_linear(pruned, adapter, g, targets[str(g.first)], ids, spec)


def _repair_magnitude(
    pruned: PreTrainedModel, original: PreTrainedModel, adapter: Adapter, found: list[Gap], ids, spec, plan
) -> None:
    """alpha per gap from one pass of the original; every kept write after the gap scaled by 1/alpha."""
    points = {f"{g.first}in": (g.first, "stream") for g in found}
    points |= {f"{g.first}out": (g.last + 1, "stream") for g in found}
    with _capture(original, adapter, points) as seen:
        _forward_all(original, ids, spec.batch_size)
    removed = removed_slots(plan)
    for g in found:
        norm_in = torch.cat([t.norm(dim=1) for t in seen[f"{g.first}in"]]).mean()
        norm_out = torch.cat([t.norm(dim=1) for t in seen[f"{g.first}out"]]).mean()
        g.alpha = float(norm_out / norm_in)
        later = [s for s in range(g.last + 1, 2 * plan.num_layers) if s not in removed]
        if not later:
            g.note = "after the last kept write: the final norm makes a rescale a no-op"
        for slot in later:
            linear = _module(pruned, adapter, slot, "out_proj")
            linear.weight.data /= g.alpha
            if linear.bias is not None:
                linear.bias.data /= g.alpha
