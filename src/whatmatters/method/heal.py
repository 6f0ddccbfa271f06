"""Healing: a short LoRA fine-tune of a pruned model on calibration text, merged back into its weights.

SLEB, Shortened LLaMA and ReplaceMe recover part of a block drop's lost accuracy this way; here it runs
after any drop (attention, MLP, block, joint, budgeted). LoRA adapters (`peft`) go on the kept linear
layers named in `heal.target_modules`; a dropped branch has no linear layers left, so it stays dropped.
After training the adapters are merged (`merge_and_unload`): the healed model is the same pruned class
with updated weights, so it saves and reloads like any pruned model. The data is the run's calibration
source (`cfg.data`), never the evaluation suite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from whatmatters.method.loss_scores import mean_nll


@dataclass(frozen=True)
class HealSpec:
    """The `heal` config group (conf/heal/*.yaml)."""

    enabled: bool = False
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
        return asdict(self) | {"target_modules": list(self.target_modules)}


def heal(model: PreTrainedModel, ids: Tensor, spec: HealSpec, progress: bool = True) -> dict:
    """LoRA-fine-tune `model` in place on calibration `ids` [N, L], merge the adapters; returns the losses.

    The loss before and after is the mean next-token NLL on the same calibration ids (what was trained on:
    it shows the fit, not generalisation; the run's accuracy before and after shows that).
    """
    mask = torch.ones_like(ids)
    before = mean_nll(model, ids, mask, spec.batch_size)
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
    optimizer = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    peft_model.train()
    losses = []
    with torch.enable_grad():
        for step in tqdm(range(spec.steps), desc="healing", disable=not progress):
            first = (step * spec.batch_size) % len(ids)
            batch = ids[first : first + spec.batch_size].to(device)
            loss = peft_model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    healed = peft_model.merge_and_unload()
    healed.eval()
    after = mean_nll(healed, ids, mask, spec.batch_size)
    trained = sum(p.numel() for p in trainable)
    return {"loss_before": before, "loss_after": after, "train_losses": losses, "lora_params": trained}
