"""Healing: a short fine-tune of a pruned model on calibration text, in its own weights.

`lora` (heal.kind, the default): SLEB, Shortened LLaMA and ReplaceMe recover part of a block drop's lost
accuracy this way; here it runs after any drop (attention, MLP, block, joint, budgeted). LoRA adapters
(`peft`) go on the kept linear layers named in `heal.target_modules`; a dropped branch has no linear layers
left, so it stays dropped. After training the adapters are merged (`merge_and_unload`).

`last_layers`: the baseline of "Reassessing Layer Pruning in LLMs" (Lu et al.): drop the last layers
(criterion=reverse), then fully fine-tune only the last `layers` kept decoder layers and lm_head, everything
else frozen. Where lm_head is tied to the input embedding (SmolLM2) it is one matrix, so the embedding
trains with it; the record says `tied_head`.

Either way the healed model is the same pruned class with updated weights, so it saves and reloads like any
pruned model. The data is the run's calibration source (`cfg.data`), never the evaluation suite: `n`
samples of `seq_len` tokens, cycled through for `steps` AdamW steps of `batch_size` at `lr`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from whatmatters.adapters import adapter_for
from whatmatters.method.loss_scores import mean_nll
from whatmatters.method.numbering import kept_layers

KINDS = ("lora", "last_layers")
LORA_ONLY = ("target_modules", "rank", "alpha")


@dataclass(frozen=True)
class HealSpec:
    """The `heal` config group (conf/heal/*.yaml)."""

    enabled: bool = False
    kind: str = "lora"
    layers: int = 3  # last_layers: how many of the last kept decoder layers train (with lm_head)
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    rank: int = 8
    alpha: float = 16.0
    steps: int = 40
    lr: float = 3e-4
    batch_size: int = 1
    n: int = 8  # calibration samples of seq_len tokens, cycled through for `steps` optimizer steps
    seq_len: int = 256

    @classmethod
    def from_config(cls, cfg: DictConfig) -> HealSpec:
        heal = cfg.get("heal")
        if heal is None:
            return cls()
        values = OmegaConf.to_container(heal, resolve=True)
        values["target_modules"] = tuple(values.get("target_modules", cls.target_modules))
        return cls(**values)

    def to_dict(self) -> dict:
        """The fields the kind uses (a LoRA spec as it always was, so healed runs keep their keys)."""
        values = asdict(self) | {"target_modules": list(self.target_modules)}
        if self.kind == "lora":
            return {k: v for k, v in values.items() if k not in ("kind", "layers")}
        return {k: v for k, v in values.items() if k not in LORA_ONLY}


def heal(model: PreTrainedModel, ids: Tensor, spec: HealSpec, progress: bool = True) -> dict:
    """Fine-tune `model` in place on calibration `ids` [N, L] as `spec.kind` says; returns the losses.

    The loss before and after is the mean next-token NLL on the same calibration ids (what was trained on:
    it shows the fit, not generalisation; the run's accuracy before and after shows that).
    """
    if spec.kind not in KINDS:
        raise ValueError(f"heal.kind={spec.kind!r} is not valid: one of {KINDS}. Fix: heal=lora")
    mask = torch.ones_like(ids)
    before = mean_nll(model, ids, mask, spec.batch_size)
    if spec.kind == "last_layers":
        trained, info = last_layers_parameters(model, spec.layers)
        losses = _train(model, trained, ids, spec, progress)
        model.requires_grad_(True).eval()  # as loaded: the freeze was for training only
        after = mean_nll(model, ids, mask, spec.batch_size)
        count = sum(p.numel() for p in trained)
        return {
            "loss_before": before,
            "loss_after": after,
            "train_losses": losses,
            "trained_params": count,
        } | info
    # Imported here: peft pulls in torchao (seconds of import, CUDA library warnings) on every app start.
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    losses = _train(peft_model, trainable, ids, spec, progress)
    healed = peft_model.merge_and_unload()
    healed.eval()
    after = mean_nll(healed, ids, mask, spec.batch_size)
    trained = sum(p.numel() for p in trainable)
    return {"loss_before": before, "loss_after": after, "train_losses": losses, "lora_params": trained}


def last_layers_parameters(model: PreTrainedModel, layers: int) -> tuple[list[nn.Parameter], dict]:
    """Freeze `model` but its last `layers` decoder layers and lm_head; returns those parameters and what
    the record says about them (which layers, whether lm_head is the tied input embedding)."""
    stack = adapter_for(model).layers(model)
    if not 1 <= layers <= len(stack):
        raise ValueError(
            f"heal.layers={layers} is not valid: 1..{len(stack)}, the kept decoder layers. Fix: heal.layers=3"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings()
    modules = [*stack[len(stack) - layers :], head]
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    trained = list({id(p): p for m in modules for p in m.parameters()}.values())
    tied = head.weight is model.get_input_embeddings().weight
    return trained, {"trained_layers": kept_layers(model)[0][-layers:], "tied_head": tied}


def _train(
    model: nn.Module, trainable: list[nn.Parameter], ids: Tensor, spec: HealSpec, progress: bool
) -> list:
    """`spec.steps` AdamW steps (no weight decay) on next-token loss, cycling through `ids`; the losses."""
    optimizer = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    losses = []
    with torch.enable_grad():
        for step in tqdm(range(spec.steps), desc="healing", disable=not progress):
            first = (step * spec.batch_size) % len(ids)
            batch = ids[first : first + spec.batch_size].to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    return losses
