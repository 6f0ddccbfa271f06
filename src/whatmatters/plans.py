"""Drop plans: which attention sub-layers, MLP sub-layers and whole blocks to remove.

A plan is plain data indexed by the *original* model's layer numbers, so it can be saved beside
the scores, applied to a fresh copy of the model, and read back from a pruned model's config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    """Modules to drop, by original layer index."""

    num_layers: int
    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()
    blocks: tuple[int, ...] = ()
    # Table 6 ablation: a dropped attention takes its residual branch with it (h = Attn(X) instead of h = X).
    # Stored here so a saved model records exactly how it was cut.
    remove_residual: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("attn", "mlp", "blocks"):
            idx = getattr(self, name)
            object.__setattr__(self, name, tuple(sorted(int(i) for i in idx)))
            if len(set(idx)) != len(idx):
                raise ValueError(f"Plan drops the same {name} layer twice: {sorted(idx)}")
            bad = [i for i in idx if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"Plan {name} indices {bad} out of range for {self.num_layers} layers")
        if len(self.blocks) == self.num_layers:
            raise ValueError("Plan removes every block; keep at least one decoder layer")
        both = set(self.blocks) & (set(self.attn) | set(self.mlp))
        if both:
            raise ValueError(f"Layers {sorted(both)} are dropped as blocks and as sub-layers; list them once")

    def to_dict(self) -> dict:
        return asdict(self) | {"attn": list(self.attn), "mlp": list(self.mlp), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text()))
