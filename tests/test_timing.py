"""Timing and the numbers derived from it: ABAB order, paired intervals, ideal speedup, SDR, flags.

No timed assertion: what is checked holds on any machine (call order, counts, intervals of given numbers).
"""

from __future__ import annotations

import random

import pytest

from conftest import TINY, tiny_model
from whatmatters.measure import clock, ideal, speed, timing
from whatmatters.measure.ideal import Profile
from whatmatters.measure.job import PHASES, Job
from whatmatters.measure.speed import PairTiming
from whatmatters.measure.timing import Timing
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import apply_plan
from whatmatters.records import metrics
from whatmatters.records.metrics import Estimate

L = TINY["num_hidden_layers"]
JOB = Job(batch_size=1, prompt_len=8, new_tokens=3, repeats=4, warmup=2)


def _calls(model, label: str, log: list[str]) -> None:
    """Log `label` once per `generate` call: at its prefill, the forward whose input is the whole prompt."""

    def hook(_module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == JOB.prompt_len:
            log.append(label)

    model.register_forward_pre_hook(hook, with_kwargs=True)


def test_alternating_measurement_runs_warmups_then_repeats_in_abab_order():
    log: list[str] = []
    original, pruned = tiny_model("llama"), apply_plan(tiny_model("llama"), Plan(L, attn=(2, 3)))
    _calls(original, "A", log)
    _calls(pruned, "B", log)
    timings = timing.alternate(original, pruned, JOB)
    assert "".join(log) == "AB" * (JOB.warmup + JOB.repeats)
    for t in timings:
        assert len(t.generate_runs) == len(t.prefill_runs) == len(t.decode_runs) == JOB.repeats


def test_pair_record_keeps_every_repeat_and_a_median_with_its_interval_per_phase():
    timings = timing.alternate(tiny_model("llama"), apply_plan(tiny_model("llama"), Plan(L, attn=(3,))), JOB)
    record = PairTiming(*timings, alternated=True).record(
        timing.profile(tiny_model("llama"), JOB), Plan(L, attn=(3,))
    )
    assert set(record["speedup"]) == set(PHASES)
    for phase, est in record["speedup"].items():
        assert len(est["ratios"]) == JOB.repeats
        assert est["low"] <= est["median"] <= est["high"]
        original, pruned = record["original"][f"{phase}_runs"], record["pruned"][f"{phase}_runs"]
        assert est["ratios"] == [o / p for o, p in zip(original, pruned, strict=True)]
    assert record["alternated"] and record["kv_ratio"] == pytest.approx(3 / 4)
    assert record["job"]["repeats"] == JOB.repeats and isinstance(record["exceeds_ideal"], bool)


def _timing(runs: list[float], job: Job = JOB) -> Timing:
    return Timing(job, "x", runs, runs, runs, None, 100, 2, 100, 10)


def test_pair_refuses_timings_of_different_jobs():
    other = Job(batch_size=4, prompt_len=8, new_tokens=3, repeats=4, warmup=2)
    with pytest.raises(ValueError, match="different jobs"):
        PairTiming(_timing([1.0] * 4, other), _timing([1.0] * 4), alternated=True)


def test_paired_ratios_are_original_over_pruned_repeat_by_repeat():
    pair = PairTiming(_timing([3.0, 2.0, 4.0, 3.0]), _timing([2.0, 2.0, 2.0, 1.0]), alternated=True)
    assert list(pair.speedups()["generate"].ratios) == [1.5, 1.0, 2.0, 3.0]
    assert pair.speedups()["generate"].median == 1.75


def test_bootstrap_interval_covers_the_true_ratio_of_noisy_pairs():
    """95% intervals of 200 synthetic jobs (12 pairs, 3% noise around a 1.2x speedup) cover 1.2 about
    95% of the time: the percentile interval of a median of 12 is a little conservative, never far below."""
    rng = random.Random(0)
    covered = 0
    for seed in range(200):
        ratios = [1.2 * rng.lognormvariate(0.0, 0.03) for _ in range(12)]
        covered += metrics.median_interval(ratios, seed).includes(1.2)
    assert 0.88 <= covered / 200 <= 1.0


def test_bootstrap_interval_is_seeded_and_shrinks_with_more_repeats():
    rng = random.Random(1)
    ratios = [1.1 * rng.lognormvariate(0.0, 0.03) for _ in range(64)]
    assert metrics.median_interval(ratios[:16], 0) == metrics.median_interval(ratios[:16], 0)
    assert metrics.median_interval(ratios, 0).half_width < metrics.median_interval(ratios[:8], 0).half_width


def test_one_repeat_has_no_spread_and_no_repeats_is_an_error():
    assert metrics.median_interval([1.3]) == Estimate(1.3, 1.3, 1.3, (1.3,))
    with pytest.raises(ValueError, match="no repeats"):
        metrics.median_interval([])


PROFILE = Profile(total_s=10.0, attn_s=(1.0, 2.0), mlp_s=(0.5, 0.5), block_s=(4.0, 4.0))


def test_ideal_speedup_is_one_over_one_minus_the_removed_share():
    assert ideal.ideal_speedup(PROFILE, Plan(2, attn=(1,))) == pytest.approx(1 / (1 - 0.2))
    assert ideal.ideal_speedup(PROFILE, Plan(2, mlp=(0,), blocks=(1,))) == pytest.approx(1 / (1 - 0.45))


def test_ideal_speedup_of_a_residual_removal_plan_is_one_since_it_keeps_every_attention():
    assert ideal.ideal_speedup(PROFILE, Plan(2, attn=(0, 1), remove_residual=True)) == 1.0
    # ... but its MLP drops, if any, still remove compute.
    plan = Plan(2, attn=(0,), mlp=(1,), remove_residual=True)
    assert ideal.ideal_speedup(PROFILE, plan) == pytest.approx(1 / (1 - 0.05))


def test_realized_speedup_exceeds_ideal_only_when_its_interval_lies_above_the_ideals():
    assert ideal.exceeds_ideal(Estimate(1.30, 1.25, 1.35, ()), ideal_high=1.11)
    assert not ideal.exceeds_ideal(Estimate(1.12, 1.09, 1.15, ()), ideal_high=1.11)  # within noise
    assert not ideal.exceeds_ideal(
        Estimate(1.14, 1.12, 1.16, ()), ideal_high=1.13
    )  # inside the ideal's spread


def test_the_ideals_interval_spans_its_profiled_calls():
    calls = tuple(Profile(1.0, (0.1 * k, 0.1), (0.2, 0.2), (0.3, 0.3)) for k in (1.0, 1.5, 2.0))
    prof = Profile(*[getattr(calls[1], f) for f in ("total_s", "attn_s", "mlp_s", "block_s")], calls=calls)
    low, high = ideal.ideal_interval(prof, Plan(2, attn=(0,)))
    assert (low, high) == pytest.approx((1 / 0.9, 1 / 0.8))
    assert low < ideal.ideal_speedup(prof, Plan(2, attn=(0,))) < high


def test_blocked_interval_carries_the_drift_between_blocks_that_a_flat_one_misses():
    # Three blocks whose medians drift (1.00, 1.03, 1.06), each tight inside: the flat bootstrap of all twelve
    # ratios is narrower than the spread of the block medians; the blocked one covers every block's median.
    ratios = [b + 0.002 * i for b in (1.00, 1.03, 1.06) for i in range(4)]
    flat = metrics.median_interval(ratios, 0)
    blocked = metrics.blocked_median_interval(ratios, [4, 4, 4], 0)
    assert blocked.high - blocked.low > flat.high - flat.low
    assert blocked.low <= 1.0031 and blocked.high >= 1.0629  # the first and last blocks' medians
    assert metrics.blocked_median_interval(ratios, [12], 0) == flat
    assert Job(1, 8, 2, repeats=20, blocks=3).block_sizes == [7, 7, 6]
    assert Job(1, 8, 2, repeats=1, blocks=3).block_sizes == [1]


def test_pair_record_flags_a_speedup_above_the_plans_ideal():
    pair = PairTiming(_timing([2.0] * 4), _timing([1.0] * 4), alternated=True)  # 2x measured
    assert pair.record(PROFILE, Plan(2, attn=(1,)))["exceeds_ideal"]  # ideal 1.25
    assert not pair.record(PROFILE, Plan(2, blocks=(0,), attn=(1,)))["exceeds_ideal"]  # ideal 2.5


def test_sdr_reproduces_the_papers_examples():
    assert round(metrics.sdr(68.2, 65.8, 1.11), 2) == 0.22  # Llama-2-13B Block-4: 2.4 / 11
    assert round(metrics.sdr(70.3, 53.4, 1.06), 2) == 2.82  # Mistral-7B MLP-8: 16.9 / 6
    with pytest.raises(ValueError, match="undefined at speedup 1"):
        metrics.sdr(70.0, 69.0, 1.0)


def test_sdr_is_undefined_with_a_reason_when_the_speedup_interval_includes_one():
    out = metrics.sdr_estimate(70.0, 65.0, Estimate(1.02, 0.99, 1.05, ()))
    assert out["value"] is None and "includes 1" in out["reason"]
    slower = metrics.sdr_estimate(70.0, 65.0, Estimate(0.95, 0.93, 0.97, ()))
    assert slower["value"] is None and "below 1" in slower["reason"]


def test_sdr_interval_spans_the_speedup_interval():
    out = metrics.sdr_estimate(70.0, 65.0, Estimate(1.10, 1.05, 1.25, ()))
    assert out["reason"] is None
    assert out["value"] == pytest.approx(5 / 10)
    assert (out["low"], out["high"]) == (pytest.approx(5 / 25), pytest.approx(5 / 5))


def test_baseline_record_is_the_identity_and_keeps_the_originals_times():
    record = speed.baseline_record(_timing([1.0, 1.1, 0.9, 1.0]))
    assert all(
        e == {"median": 1.0, "low": 1.0, "high": 1.0, "ratios": []} for e in record["speedup"].values()
    )
    assert record["original"]["generate_runs"] == [1.0, 1.1, 0.9, 1.0]


def test_profile_times_every_branch_and_block_of_the_original(family):
    prof = timing.profile(tiny_model(family), JOB)
    assert len(prof.attn_s) == len(prof.mlp_s) == len(prof.block_s) == L
    assert all(
        a > 0 and m > 0 and a + m <= b for a, m, b in zip(prof.attn_s, prof.mlp_s, prof.block_s, strict=True)
    )
    assert sum(prof.block_s) < prof.total_s
    with pytest.raises(ValueError, match="original"):
        timing.profile(apply_plan(tiny_model(family), Plan(L, attn=(0,))), JOB)


def test_pair_fits_is_false_when_the_original_would_not_fit_beside_the_pruned():
    model = tiny_model("llama")
    assert timing.pair_fits(model, 1000, JOB)
    assert not timing.pair_fits(model, 2**60, JOB)


def test_records_name_the_cpu_with_the_bf16_instruction_sets_that_decide_its_rounding():
    info = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
    )
    assert clock.cpu_name(info) == "Intel(R) Xeon(R) Processor [amx_bf16 avx512_bf16]"
    assert (
        clock.cpu_name(info.replace(" amx_bf16 avx512_bf16", ""))
        == "Intel(R) Xeon(R) Processor [no bf16 ISA]"
    )
    assert clock.cpu_name("processor\t: 0\n") == ""  # no model name (not x86 Linux): the caller falls back
    assert clock.machine_name("cpu")  # this host, whatever it is
