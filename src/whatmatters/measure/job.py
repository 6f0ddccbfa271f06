"""The generation job every timing runs, and the one place a job is built from the `speed` config group.

A speedup compares two timings of the same job only, so every field that changes the work is in `Job`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from whatmatters import models

if TYPE_CHECKING:
    from whatmatters.method.quant import QuantSpec

PHASES = ("generate", "prefill", "decode")


@dataclass(frozen=True)
class Job:
    """One generation job: B prompts of P random tokens, G greedy new tokens, timed R times after warm-up.

    Speedups compare timings of the same job only, so every field that changes the work is here.
    """

    batch_size: int
    prompt_len: int
    new_tokens: int
    dtype: str = "float32"
    device: str = "cpu"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0  # of the random prompt (original and pruned models read the same tokens) and bootstrap
    # Repeats are timed in up to this many blocks (never more than repeats), each re-warmed first; the
    # speedup's interval resamples blocks, then repeats within them, so it carries the drift between blocks,
    # not only the noise within one.
    blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "prompt_len", "new_tokens", "repeats"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Job {name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"Job warmup must be >= 0, got {self.warmup}")
        if self.blocks < 1:
            raise ValueError(f"Job blocks must be >= 1, got {self.blocks}")
        if self.dtype not in models.DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; choose one of {sorted(models.DTYPES)}")

    @property
    def block_sizes(self) -> list[int]:
        """Repeats per block, as even as they split (12 in 3: 4, 4, 4; 20 in 3: 7, 7, 6; 1 in 3: 1)."""
        blocks = min(self.blocks, self.repeats)
        return [self.repeats // blocks + (i < self.repeats % blocks) for i in range(blocks)]

    @property
    def cached_tokens(self) -> int:
        """Tokens in the KV cache after `generate`: the last new token is returned but never fed back."""
        return self.prompt_len + self.new_tokens - 1


def job_from_config(speed: DictConfig, device: str, seed: int) -> Job:
    """The `speed` config group's job on `device` (the run and speed apps both build it here)."""
    return Job(**OmegaConf.to_container(speed, resolve=True), device=device, seed=seed)


def job_for_quant(job: Job, spec: QuantSpec) -> Job:
    """The job to run for a quantization scheme: as configured where the scheme has a kernel on the job's
    device; else one untimed call, which still measures the KV cache (weight-only schemes leave it as is)."""
    return job if spec.has_kernel(job.device) else replace(job, repeats=1, warmup=0)
