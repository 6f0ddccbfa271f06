"""Timing of a generation job on models the caller passes: one model, or several alternated ABAB.

The paper's speedup is time(original) / time(pruned) for the same `generate` job (bf16, one GPU, batch as
large as fits, 2048 prompt + 2048 new tokens). Here one timed `generate` per repeat gives all three phases:

* **prefill**: the first forward of `generate` (the whole prompt, fresh cache);
* **decode**: the other G - 1 forwards (one token each, through the KV cache), per token;
* **generate**: the whole call, sampling and bookkeeping included (the paper's number).

The clock itself (device syncs, forward hooks inside the real `generate`) is `clock`.

Models compared are timed alternately (A B A B ...), after each has warmed up, and every repeat is kept:
load elsewhere on the machine then slows both calls of a pair instead of one model's whole block, and the
speedup is the median of the paired ratios with a bootstrap interval (`speed.PairTiming`).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from whatmatters.adapters import adapter_for
from whatmatters.measure import clock, memory
from whatmatters.measure.ideal import Profile
from whatmatters.measure.job import Job


@dataclass
class Timing:
    """One model's runs of a job: seconds per repeat, and memory and cache after the last repeat."""

    job: Job
    label: str
    prefill_runs: list[float]
    decode_runs: list[float] | None  # seconds per new token after the first; None when G = 1
    generate_runs: list[float]
    peak_memory_bytes: int | None
    kv_cache_bytes: int
    kv_cache_layers: int
    kv_analytic_bytes: int
    params: int

    def runs(self, phase: str) -> list[float] | None:
        """Seconds of every repeat of `phase` (one of PHASES)."""
        return getattr(self, f"{phase}_runs")

    def to_dict(self) -> dict:
        """Medians, every repeat, KV cache and peak memory, as a record stores one model's timing."""
        raw = asdict(self)
        del raw["job"], raw["label"]  # the job is recorded once, beside both models
        return raw | {"prefill_s": self.prefill_s, "decode_s": self.decode_s, "generate_s": self.generate_s}

    @property
    def prefill_s(self) -> float:
        return statistics.median(self.prefill_runs)

    @property
    def decode_s(self) -> float | None:
        """Median seconds per decoded token."""
        return None if self.decode_runs is None else statistics.median(self.decode_runs)

    @property
    def generate_s(self) -> float:
        return statistics.median(self.generate_runs)


class _Runner:
    """One model's timed calls of a job, collected repeat by repeat (so several can be interleaved)."""

    def __init__(
        self, model: PreTrainedModel, label: str, device: torch.device, job: Job, alone: bool
    ) -> None:
        self.model, self.label, self.device, self.job = model, label, device, job
        self.ids = clock.random_prompt(model, job)
        # Peak memory is per model only where it can be told apart from the other models' weights: on a GPU
        # (allocated bytes above those before the call, plus this model's weights) or a model timed alone.
        self.peak_readable = alone or self.device.type == "cuda"
        self.weights = memory.weight_bytes(model)
        self.prefill, self.decode, self.whole, self.peaks = [], [], [], []
        self.cache: Cache | None = None

    def warm_up(self) -> None:
        clock.generate_exactly(self.model, self.ids, self.job)

    def timed(self) -> None:
        job, device = self.job, self.device
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        resettable = self.peak_readable and memory.reset_peak(device)
        with clock.spans(self.model, self.model, device) as forwards:
            start = clock.now(device)
            self.cache = clock.generate_exactly(self.model, self.ids, job)
            self.whole.append(clock.now(device) - start)
        if len(forwards) != job.new_tokens:
            raise RuntimeError(
                f"generate ran {len(forwards)} forwards for {job.new_tokens} new tokens; expected a prefill "
                "and one per further token (chunked prefill or deferred stopping would break the timing)"
            )
        if not resettable:
            self.peaks.append(None)
        elif device.type == "cuda":
            self.peaks.append(self.weights + memory.peak(device) - before)
        else:
            self.peaks.append(memory.peak(device))
        self.prefill.append(forwards[0])
        if job.new_tokens > 1:
            self.decode.append(sum(forwards[1:]) / (job.new_tokens - 1))

    def result(self) -> Timing:
        job = self.job
        kv_bytes, kv_layers = memory.measured_cache(self.cache)
        return Timing(
            job=job,
            label=self.label,
            prefill_runs=self.prefill,
            decode_runs=self.decode or None,
            generate_runs=self.whole,
            peak_memory_bytes=None if None in self.peaks else max(self.peaks),
            kv_cache_bytes=kv_bytes,
            kv_cache_layers=kv_layers,
            kv_analytic_bytes=sum(
                memory.kv_layer_bytes(self.model.config, job.batch_size, job.cached_tokens, job.dtype)
            ),
            params=sum(p.numel() for p in self.model.parameters()),
        )


def no_progress() -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Measure: one model, or several alternated
# ---------------------------------------------------------------------------------------------
def measure_alternating(
    models_: Sequence[PreTrainedModel],
    job: Job,
    labels: Sequence[str],
    tick: Callable[[], None] = no_progress,
) -> list[Timing]:
    """Run `job` on every model in turn, A B A B ...: warm-ups first, then R rounds of one timed call each.

    The i-th timed calls of two models are seconds apart, so their ratio is a paired measurement that load
    elsewhere on the machine mostly cancels out of. Every model must already be on the job's device with the
    job's dtype; memory for the job (cache, activations) is checked first. `tick` after each call (progress).
    """
    if len(models_) != len(labels):
        raise ValueError(f"{len(models_)} models but {len(labels)} labels")
    devices = [clock.check_model(m, job) for m in models_]
    largest = max(models_, key=memory.weight_bytes)
    estimate = memory.estimate_memory(largest, job)
    memory.ensure_fits(estimate, job.device, resident=estimate.weights)
    alone = len(models_) == 1
    runners = [_Runner(*args, job, alone) for args in zip(models_, labels, devices, strict=True)]
    for (
        size
    ) in job.block_sizes:  # each block re-warms: what carries over between blocks is drift, not warm-up
        for _ in range(job.warmup):
            for runner in runners:
                runner.warm_up()
                tick()
        for _ in range(size):
            for runner in runners:
                runner.timed()
                tick()
    return [runner.result() for runner in runners]


def measure(
    model: PreTrainedModel, job: Job, label: str = "none", tick: Callable[[], None] = no_progress
) -> Timing:
    """Run `job` on `model` alone: warm-up, then R timed `generate` calls (KV cache, Table 4, a baseline)."""
    return measure_alternating([model], job, [label], tick)[0]


def pair_fits(pruned: PreTrainedModel, original_bytes: int, job: Job) -> bool:
    """Whether an original of `original_bytes` weights can be loaded beside `pruned` and still run `job`."""
    estimate = memory.estimate_memory(pruned, job)
    both = memory.MemoryEstimate(estimate.weights + original_bytes, estimate.kv_cache, estimate.activations)
    return memory.fits(both, job.device, resident=estimate.weights)


def alternate(
    original: PreTrainedModel, pruned: PreTrainedModel, job: Job, tick: Callable[[], None] = no_progress
) -> tuple[Timing, Timing]:
    """The original and `pruned` timed A B A B ... on `job` (see `measure_alternating`)."""
    timings = measure_alternating([original, pruned], job, ["none", "pruned"], tick)
    return timings[0], timings[1]


# ---------------------------------------------------------------------------------------------
# Where the time goes: the profile behind the ideal speedup
# ---------------------------------------------------------------------------------------------
def profile(model: PreTrainedModel, job: Job, calls: int = 5) -> Profile:
    """Time every attention, MLP and block of an original (unpruned, warmed-up) model over `calls` `generate`
    calls and keep the median one, so one call slowed by other work on the machine does not set the ideal;
    every call is kept beside it for the ideal's spread.

    A branch is timed from its pre-norm's call to its output (Gemma2/3: the post-norm), i.e. everything a
    drop removes. Every timed module syncs the device twice, which inflates the module times a little
    against the rest: the ideal speedup (`ideal.ideal_speedup`) is an upper-side approximation.
    """
    if hasattr(model.config, "drop_plan"):
        raise ValueError("Profile the original model: plans and ideal speedups index its layers")
    device = clock.check_model(model, job)
    adapter = adapter_for(model)
    ids = clock.random_prompt(model, job)
    kinds = ("attn", "mlp", "block")
    profiles = []
    with contextlib.ExitStack() as stack:
        spans = {kind: [] for kind in kinds}
        for layer in adapter.layers(model):
            for kind in ("attn", "mlp"):
                branch = adapter.branch(kind)
                first, last = layer.get_submodule(branch.norm), layer.get_submodule(branch.output)
                spans[kind].append(stack.enter_context(clock.spans(first, last, device)))
            spans["block"].append(stack.enter_context(clock.spans(layer, layer, device)))
        for _ in range(calls):
            for times in (t for kind in kinds for t in spans[kind]):
                times.clear()
            start = clock.now(device)
            clock.generate_exactly(model, ids, job)
            total = clock.now(device) - start
            profiles.append(Profile(total, *(tuple(sum(t) for t in spans[kind]) for kind in kinds)))
    # The median call as a whole, not per-module medians: its module times add up within its own total. The
    # other calls ride along, so the ideal speedup gets a spread of its own (`ideal.ideal_interval`).
    median = sorted(profiles, key=lambda p: p.total_s)[len(profiles) // 2]
    return replace(median, calls=tuple(profiles))
