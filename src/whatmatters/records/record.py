"""The typed run record: what one finished run (or a baseline) measured, as the results store holds it.

Runs write records; tables, figures, tracking and notebooks only read them, always through `RunRecord`,
so a renamed field fails here, where it is defined, not far away in a plot.

Other engineers add fields as the measurements grow (per-doc values, speed intervals, quantization).
Every nested part parses leniently: a key it does not know is kept in its `extra` and written back
unchanged, so a new optional field never breaks an older reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whatmatters.records.eval_result import EvalResult
from whatmatters.records.parsing import RecordError, parse_fields, plain

SCHEMA = 2

# Schema 1 has the same layout without per-doc values, speed intervals and quantization: still readable.
READABLE_SCHEMAS = (1, 2)


@dataclass
class Interval:
    """A measured ratio: median and 95% interval of the paired per-repeat ratios (low/high None when a
    schema-1 record kept only one number)."""

    median: float
    low: float | None = None
    high: float | None = None
    ratios: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: float | Mapping[str, Any]) -> Interval:
        return parse_fields(cls, value) if isinstance(value, Mapping) else cls(median=float(value))

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


PHASES = ("generate", "prefill", "decode")
# Schema 1 stored one scalar per phase under these keys.
_SCALAR_SPEEDUPS = {"speedup": "generate", "speedup_prefill": "prefill", "speedup_decode": "decode"}


@dataclass
class Speed:
    """Speedup per phase (generate, prefill, decode) of the pruned model over the original, same job."""

    speedup: dict[str, Interval]  # a phase the job did not time is absent
    ideal_speedup: float | None = None
    exceeds_ideal: bool | None = None  # realized above ideal beyond the interval: a timing fault
    kv_ratio: float | None = None
    job: dict | None = None
    original: dict | None = None
    pruned: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Speed:
        data = dict(data)
        speedup = data.pop("speedup", None)
        if isinstance(speedup, Mapping):
            phases = {phase: Interval.from_value(v) for phase, v in speedup.items() if v is not None}
        else:  # schema 1: scalars under speedup, speedup_prefill, speedup_decode
            scalars = {"speedup": speedup} | {k: data.pop(k, None) for k in list(_SCALAR_SPEEDUPS)[1:]}
            phases = {_SCALAR_SPEEDUPS[k]: Interval(float(v)) for k, v in scalars.items() if v is not None}
        return parse_fields(cls, data, speedup=phases)


@dataclass
class Sdr:
    """Speedup degradation ratio with its interval, or None with the reason it is undefined."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: float | Mapping[str, Any] | None) -> Sdr | None:
        if value is None:
            return None
        return parse_fields(cls, value) if isinstance(value, Mapping) else cls(value=float(value))


@dataclass
class Method:
    """What was dropped: target (none|attn|mlp|block|joint), how many, and the method's switches."""

    target: str
    n: int | None = None
    ratio: float | None = None
    consecutive: bool = False
    remove_residual: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Method:
        return parse_fields(cls, data)


# The parts of a setting a baseline has too; the others (data, criterion, mode, method switches) belong
# to a pruning run only. See RunRecord.setting.
RUN_ONLY = ("data.", "method.", "criterion", "mode")


@dataclass
class RunRecord:
    """One finished run (or the unpruned baseline: method.target == "none"), as the store holds it."""

    key: str
    model: str
    method: Method
    dropped: int
    num_layers: int
    eval: EvalResult
    name: str = ""
    experiments: list[str] = field(default_factory=list)
    created: str = ""
    versions: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    mode: str | None = None
    criterion: str | None = None
    speed: Speed | None = None
    sdr: Sdr | None = None
    quant: dict | None = None
    baseline_avg: float | None = None
    plan: dict | None = None
    steps: list | None = None
    forward_equivalents: float | None = None
    scores: dict[str, list[float | None]] | None = None
    params: dict | None = None
    wall_s: float | None = None
    # KL to the original, perplexity and top-1 agreement on held-out text: "per_seq" values (what a paired
    # interval resamples) and their summary (`metrics.fidelity_summary`); None in records made before it.
    fidelity: dict | None = None
    schema: int = SCHEMA
    extra: dict = field(default_factory=dict)
    # The file it was read from (never written): what an error about this record names.
    source: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | None = None) -> RunRecord:
        """Parse a stored record; raises RecordError naming `source` (or the key) when it cannot."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{source}: a record is a JSON object, got {type(data).__name__}")
        where = source or f"record {data.get('key')!r}"
        schema = data.get("schema", SCHEMA)
        if schema not in READABLE_SCHEMAS:
            raise RecordError(
                f"{where}: record schema {schema!r}, this version reads {READABLE_SCHEMAS}; "
                "re-run that config to refresh it (the file is left in place)"
            )
        try:
            return parse_fields(
                cls,
                {k: v for k, v in data.items() if k != "source"},
                method=Method.from_dict(data["method"]),
                eval=EvalResult.from_dict(data["eval"]),
                speed=Speed.from_dict(data["speed"]) if data.get("speed") else None,
                sdr=Sdr.from_value(data.get("sdr")),
                schema=SCHEMA,
                source=source,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RecordError(
                f"{where}: not a valid run record ({type(err).__name__}: {err}); re-run that config"
            ) from err

    def to_dict(self) -> dict[str, Any]:
        return plain(self) | {"schema": SCHEMA}

    @property
    def is_baseline(self) -> bool:
        return self.method.target == "none"

    @property
    def where(self) -> str:
        """How an error names this record: its file, else its key."""
        return f"{self.source} (key {self.key})" if self.source else f"record {self.key}"

    def setting(self) -> dict[str, Any]:
        """Everything but the method (target, n) that decides this record's numbers, as flat fields.

        Two records share a table or a curve only when their settings agree (a baseline on the fields it
        has: see RUN_ONLY). Unset (None/False) values are left out, so an older record that lacks a new
        optional field still matches a newer one that leaves it unset.
        """
        cfg = self.config
        model_cfg = cfg.get("model") or {}
        eval_cfg = {k: v for k, v in (cfg.get("eval") or {}).items() if k not in ("suite", "batch_size")}
        out: dict[str, Any] = {
            "model": self.model,
            **{f"model.{k}": model_cfg.get(k) for k in ("name_or_path", "dtype", "revision", "random_init")},
            "eval.suite": self.eval.suite,
            **_flat("eval", eval_cfg),
            "eval.limit": self.eval.limit if self.eval.limit is not None else eval_cfg.get("limit"),
            "eval.protocol": self.eval.protocol,
            "seed": cfg.get("seed"),
            **_flat("quant", self.quant or cfg.get("quant") or {}),
            **_flat("speed", cfg.get("speed") or {}),
            "hardware": self.versions.get("device"),
        }
        if out.get("quant.scheme") == "none":  # no quantization, however it is spelled
            out = {k: v for k, v in out.items() if not k.startswith("quant.")}
        if not self.is_baseline:
            switches = {k: v for k, v in plain(self.method).items() if k not in ("target", "n", "ratio")}
            out |= {
                **_flat("data", cfg.get("data") or {}),
                "criterion": self.criterion,
                "mode": self.mode,
                **_flat("method", switches),
            }
        return {k: v for k, v in out.items() if v is not None and v is not False}


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """Nested config as dotted fields (`speed.prompt_len`), the names a table's `where=` filters take."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}
