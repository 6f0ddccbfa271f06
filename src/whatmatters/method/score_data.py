"""The `Scores` data type and its file, scores.json: what the scorer (scores.py) returns, with no torch.

Plans, tables, figures and notebooks read scores through this type, so they need not import the hooks
that compute them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whatmatters.files import atomic_write_text

SCORE_KINDS = ("attn", "mlp", "block")


@dataclass
class Scores:
    """One score per layer for each kind (NaN where the module no longer exists), plus metadata.

    Lists are indexed by the original layer number (a pruned model has NaN at removed blocks);
    `angular[i][j]` (i < j) is the mean angular distance arccos(cos(h_i, h_j)) / pi between the
    residual stream entering the i-th and j-th layer that ran (j = L: the last output): the
    Gromov et al. / ShortGPT criterion for dropping the consecutive span of layers i..j-1, averaged
    over the tokens `meta["angular"]` names (all of them, or each sample's last one).
    """

    attn: list[float]
    mlp: list[float]
    block: list[float]
    angular: list[list[float]] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.block)

    def to_json(self) -> str:
        # JSON has no NaN: a missing (dropped) module is written as null.
        def clean(v):
            if isinstance(v, list):
                return [clean(x) for x in v]
            return None if isinstance(v, float) and math.isnan(v) else v

        return json.dumps({k: clean(v) for k, v in asdict(self).items()}, indent=1)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Scores:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            data = {k: raw[k] for k in SCORE_KINDS}
        except FileNotFoundError:
            raise FileNotFoundError(f"No scores file at {path}; run experiments/score.py first") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path} is not a valid scores.json ({err}); re-run experiments/score.py"
            ) from err
        nan = float("nan")
        lists = {k: [nan if v is None else float(v) for v in data[k]] for k in SCORE_KINDS}
        return cls(**lists, angular=raw.get("angular"), meta=raw.get("meta", {}))
