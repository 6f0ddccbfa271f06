"""The config class of a `nemotron-nas` (DeciLM) folder: a Llama config whose layers differ, one
`block_configs` entry per layer. whatmatters copies this file into every folder it exports, because
transformers has no `nemotron-nas` model type and vLLM registers no config for it: engines load it with
`trust_remote_code=True`.

Standalone on purpose (it imports only transformers): it runs from the exported folder, not from whatmatters.
Each block config becomes an object with the attributes engines read (`attention.no_op`,
`attention.n_heads_in_group`, `ffn.no_op`, `ffn.ffn_mult`, `replace_with_linear`) and goes back to a dict in
`to_dict`, so config.json round-trips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import LlamaConfig


@dataclass
class AttentionConfig:
    no_op: bool = False  # the layer has no attention: no weights, no KV cache
    n_heads_in_group: int | None = None  # query heads per KV head (num_attention_heads / num_key_value_heads)
    replace_with_linear: bool = False  # never written: vLLM ignores it


@dataclass
class FFNConfig:
    no_op: bool = False  # the layer has no MLP
    ffn_mult: float | None = None  # intermediate size = ceil_256(int(2 * ffn_mult * hidden_size / 3))
    replace_with_linear: bool = False


@dataclass
class BlockConfig:
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    ffn: FFNConfig = field(default_factory=FFNConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockConfig:
        known = {"attention": AttentionConfig.__dataclass_fields__, "ffn": FFNConfig.__dataclass_fields__}
        parts = {k: {f: v for f, v in (d.get(k) or {}).items() if f in known[k]} for k in known}
        return cls(AttentionConfig(**parts["attention"]), FFNConfig(**parts["ffn"]))


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs: list | None = None, **kwargs: Any) -> None:
        self.block_configs = [
            b if isinstance(b, BlockConfig) else BlockConfig.from_dict(b) for b in block_configs or []
        ]
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["block_configs"] = [asdict(b) for b in self.block_configs]
        return out
