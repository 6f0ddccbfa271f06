"""Timing of a generation job on models the caller passes: one model, or several alternated ABAB.

The paper's speedup is time(original) / time(pruned) for the same `generate` job (bf16, one GPU, batch as
large as fits, 2048 prompt + 2048 new tokens). Here one timed `generate` per repeat gives all three phases:

* **prefill**: the first forward of `generate` (the whole prompt, fresh cache);
* **decode**: the other G - 1 forwards (one token each, through the KV cache), per token;
* **generate**: the whole call, sampling and bookkeeping included (the paper's number).

Forward hooks on the model read the clock, after a device sync, when each forward starts and ends. Timing
inside the real `generate` rather than a hand-written decode loop measures exactly the paper's job, with
no second implementation to keep in step with transformers. The syncs cost little: in transformers 5.23
greedy `generate` already waits for the device after every step to check the stopping criteria.

Models compared are timed alternately (A B A B ...), after each has warmed up, and every repeat is kept:
load elsewhere on the machine then slows both calls of a pair instead of one model's whole block, and the
speedup is the median of the paired ratios with a bootstrap interval (`speed.PairTiming`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from whatmatters import memory, models
from whatmatters.adapters import adapter_for
from whatmatters.metrics import Profile

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

    def __post_init__(self) -> None:
        for name in ("batch_size", "prompt_len", "new_tokens", "repeats"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Job {name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"Job warmup must be >= 0, got {self.warmup}")
        if self.dtype not in models.DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; choose one of {sorted(models.DTYPES)}")

    @property
    def cached_tokens(self) -> int:
        """Tokens in the KV cache after `generate`: the last new token is returned but never fed back."""
        return self.prompt_len + self.new_tokens - 1


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


# ---------------------------------------------------------------------------------------------
# One timed generate
# ---------------------------------------------------------------------------------------------
def _now(device: torch.device) -> float:
    """Wall clock once the device has finished the work queued so far."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def _spans(first: nn.Module, last: nn.Module, device: torch.device) -> Iterator[list[float]]:
    """Seconds of each run from a call of `first` to the return of `last` (the same module: each call)."""
    times: list[float] = []
    starts: list[float] = []

    def begin(*_) -> None:
        starts.append(_now(device))

    def end(*_) -> None:
        times.append(_now(device) - starts.pop())

    handles = [first.register_forward_pre_hook(begin), last.register_forward_hook(end)]
    try:
        yield times
    finally:
        for handle in handles:
            handle.remove()


def _prompt(model: PreTrainedModel, job: Job) -> torch.Tensor:
    """(B, P) random token ids, the same for every model of the job; timing does not depend on the text."""
    vocab = model.config.get_text_config(decoder=True).vocab_size
    generator = torch.Generator().manual_seed(job.seed)
    return torch.randint(vocab, (job.batch_size, job.prompt_len), generator=generator).to(job.device)


def _generate(model: PreTrainedModel, ids: torch.Tensor, job: Job) -> Cache:
    """Greedy `generate` of exactly G new tokens (min = max: no early stop); returns its KV cache."""
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        min_new_tokens=job.new_tokens,
        max_new_tokens=job.new_tokens,
        pad_token_id=0,  # never written (no sequence ends early); set so generate does not warn
        return_dict_in_generate=True,
    )
    return out.past_key_values


def _check_model(model: PreTrainedModel, job: Job) -> torch.device:
    """The model's device, after checking it runs the job's dtype on the job's device."""
    param = next(model.parameters())
    device = torch.device(job.device)
    if param.dtype != models.DTYPES[job.dtype] or param.device.type != device.type:
        raise ValueError(
            f"The model is {param.dtype} on {param.device}, the job {job.dtype} on {job.device}: "
            "build or load the model with the job's dtype and device"
        )
    return param.device


class _Runner:
    """One model's timed calls of a job, collected repeat by repeat (so several can be interleaved)."""

    def __init__(
        self, model: PreTrainedModel, label: str, device: torch.device, job: Job, alone: bool
    ) -> None:
        self.model, self.label, self.device, self.job = model, label, device, job
        self.ids = _prompt(model, job)
        # Peak memory is per model only where it can be told apart from the other models' weights: on a GPU
        # (allocated bytes above those before the call, plus this model's weights) or a model timed alone.
        self.peak_readable = alone or self.device.type == "cuda"
        self.weights = memory.weight_bytes(model)
        self.prefill, self.decode, self.whole, self.peaks = [], [], [], []
        self.cache: Cache | None = None

    def warm_up(self) -> None:
        _generate(self.model, self.ids, self.job)

    def timed(self) -> None:
        job, device = self.job, self.device
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        resettable = self.peak_readable and memory.reset_peak(device)
        with _spans(self.model, self.model, device) as forwards:
            start = _now(device)
            self.cache = _generate(self.model, self.ids, job)
            self.whole.append(_now(device) - start)
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
    devices = [_check_model(m, job) for m in models_]
    largest = max(models_, key=memory.weight_bytes)
    estimate = memory.estimate_memory(largest, job)
    memory.ensure_fits(estimate, job.device, resident=estimate.weights)
    alone = len(models_) == 1
    runners = [_Runner(*args, job, alone) for args in zip(models_, labels, devices, strict=True)]
    for _ in range(job.warmup):
        for runner in runners:
            runner.warm_up()
            tick()
    for _ in range(job.repeats):
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
def profile(model: PreTrainedModel, job: Job, calls: int = 3) -> Profile:
    """Time every attention, MLP and block of an original (unpruned, warmed-up) model over `calls` `generate`
    calls and keep the median one, so one call slowed by other work on the machine does not set the ideal.

    A branch is timed from its pre-norm's call to its output (Gemma2/3: the post-norm), i.e. everything a
    drop removes. Every timed module syncs the device twice, which inflates the module times a little
    against the rest: the ideal speedup (`metrics.ideal_speedup`) is an upper-side approximation.
    """
    if hasattr(model.config, "drop_plan"):
        raise ValueError("Profile the original model: plans and ideal speedups index its layers")
    device = _check_model(model, job)
    adapter = adapter_for(model)
    ids = _prompt(model, job)
    kinds = ("attn", "mlp", "block")
    profiles = []
    with contextlib.ExitStack() as stack:
        spans = {kind: [] for kind in kinds}
        for layer in adapter.layers(model):
            for kind in ("attn", "mlp"):
                branch = adapter.branch(kind)
                first, last = layer.get_submodule(branch.norm), layer.get_submodule(branch.output)
                spans[kind].append(stack.enter_context(_spans(first, last, device)))
            spans["block"].append(stack.enter_context(_spans(layer, layer, device)))
        for _ in range(calls):
            for times in (t for kind in kinds for t in spans[kind]):
                times.clear()
            start = _now(device)
            _generate(model, ids, job)
            total = _now(device) - start
            profiles.append(Profile(total, *(tuple(sum(t) for t in spans[kind]) for kind in kinds)))
    # The median call as a whole, not per-module medians: its module times add up within its own total.
    return sorted(profiles, key=lambda p: p.total_s)[len(profiles) // 2]
