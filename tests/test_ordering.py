"""The ordering table: attention vs MLP / block at the same n, paired, resolved only outside noise."""

from __future__ import annotations

import pytest

from conftest import record, with_docs
from whatmatters.records.metrics import fidelity_difference, paired_difference
from whatmatters.report.ordering import ordering_table


def _run(target: str, values: list[float], kl: list[float]):
    r = with_docs(record(target, 4, 0.0, key=f"{target}4"), values)
    r.fidelity = {"per_seq": {"kl": kl, "tokens": [127.0] * len(kl)}}
    return r


def test_each_pair_is_the_paired_difference_and_only_intervals_excluding_zero_are_verdicts():
    docs = 40
    attn = _run("attn", [1.0] * 30 + [0.0] * 10, [0.10, 0.12, 0.11, 0.13])
    mlp = _run("mlp", [1.0] * 29 + [0.0] * 11, [0.40, 0.45, 0.42, 0.50])  # one doc apart: accuracy unresolved
    block = _run("block", [1.0] * 10 + [0.0] * 30, [0.90, 1.00, 0.95, 1.10])
    table = ordering_table([attn, mlp, block]).set_index("pair")
    assert list(table.index) == ["attn - mlp", "attn - block"]
    delta, se, _ = paired_difference(mlp.eval, attn.eval)
    row = table.loc["attn - mlp"]
    assert row["ΔAvg"] == pytest.approx(100 / docs) and row["ΔAvg"] == pytest.approx(delta)
    assert row["ΔAvg low"] == pytest.approx(delta - 1.96 * se) and row["ΔAvg verdict"] == "not resolved"
    assert row["ΔKL"] == pytest.approx(
        fidelity_difference(attn.fidelity["per_seq"], mlp.fidelity["per_seq"], "kl")["value"]
    )
    assert row["ΔKL verdict"] == "attn cheaper"  # lower KL on every sequence
    assert table.loc["attn - block", "ΔAvg verdict"] == "attn cheaper"  # 20 docs better, none worse


def test_a_pair_without_per_doc_values_or_fidelity_says_no_data():
    attn, mlp = record("attn", 4, 50.0, key="a"), record("mlp", 4, 40.0, key="m")
    row = ordering_table([attn, mlp]).iloc[0]
    assert row["ΔAvg verdict"] == "no data" and row["ΔKL verdict"] == "no data"
