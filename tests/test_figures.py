"""Figures are drawn from fixture records alone (no model): each curve holds records of one setting only,
and the numbers behind every line and bar (the data CSV, the Line2D data) are the records' own."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import record, with_docs
from whatmatters.apps import figures
from whatmatters.method.scores import Scores
from whatmatters.records.metrics import paired_difference
from whatmatters.records.store import Interval, ResultsStore, Speed
from whatmatters.report import plots
from whatmatters.report.tables import TableError

SCORES = {"attn": [0.3, 0.1, 0.01], "mlp": [0.9, 0.1, 0.05], "block": [0.9, 0.2, 0.06]}


def test_make_figures_draws_the_four_curves_both_modes_and_a_heatmap_naming_its_run(tmp_path):
    store = ResultsStore(tmp_path / "results")
    for target in ("attn", "mlp", "block", "joint"):
        for n in (4, 8):
            for mode in ("one_shot", "iterative"):
                store.put(record(target, n, 50.0 - n, mode=mode, key=f"{target}{n}{mode}", scores=SCORES))
    store.put(record("none", 0, 50.0, experiment=None, key="base"))
    written = figures.figures(tmp_path / "results", tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert "heatmap_smollm2-135m.png" in names
    for fig in ("drop_curves", "drop_curves", "one_shot_vs_iterative", "speed", "sdr"):
        for ext in ("png", "pdf", "csv"):
            assert f"{fig}_smollm2-135m_embedded.{ext}" in names
    assert "drop_curves_smollm2-135m_embedded_iterative.csv" in names  # iterative: a figure of its own
    main = pd.read_csv(tmp_path / "figs" / "drop_curves_smollm2-135m_embedded.csv")
    assert set(main.target) == {"attn", "mlp", "block", "joint"} and set(main["mode"]) == {"one_shot"}
    attn = main[main.target == "attn"]
    assert list(attn.n) == [0, 4, 8] and list(attn.Avg) == [50.0, 46.0, 42.0]
    assert list(attn.key) == ["base", "attn4one_shot", "attn8one_shot"]
    both = pd.read_csv(tmp_path / "figs" / "one_shot_vs_iterative_smollm2-135m_embedded.csv")
    assert len(both[both.n > 0]) == 16 and set(both["mode"]) == {"one_shot", "iterative"}
    ((stem, title, run),) = plots.heatmap_runs(store.records())
    assert stem == "heatmap_smollm2-135m" and run.key in title and run.mode == "one_shot"


def test_the_main_curve_holds_only_cosine_runs_and_each_ablation_gets_its_own(tmp_path, monkeypatch):
    records = [record("none", 0, 50.0, experiment=None, key="base")]
    for n, avg in ((3, 48.0), (8, 45.0)):
        records.append(record("attn", n, avg, key=f"cos{n}"))
        records.append(record("attn", n, avg - 20, key=f"rand{n}", criterion="random"))
        no_residual = record("attn", n, avg - 30, key=f"nores{n}")
        no_residual.method.remove_residual = True
        records.append(no_residual)
    for r in records:  # a method field every run shares (here the scorer's angular default) names nothing
        r.method.extra["angular"] = "mean"
    drawn = {}
    save = plots.save_figure

    def keep(fig, stem, data):
        drawn[stem.name] = [xy for line in fig.axes[0].lines if (xy := line.get_xydata().tolist())]
        return save(fig, stem, data)

    monkeypatch.setattr(plots, "save_figure", keep)
    store = ResultsStore(tmp_path / "results")
    for r in records:
        store.put(r)
    sets = {fs.name: fs for fs in plots.figure_sets(store.records())}
    assert sorted(sets) == [
        "smollm2-135m_embedded",
        "smollm2-135m_embedded_no-residual",
        "smollm2-135m_embedded_random",
    ]
    plots.drop_curves(sets["smollm2-135m_embedded"], tmp_path / "main")
    assert drawn["main"] == [[[0.0, 50.0], [3.0, 48.0], [8.0, 45.0]]]  # one line: the cosine runs only
    assert list(pd.read_csv(tmp_path / "main.csv").key) == ["base", "cos3", "cos8"]
    plots.drop_curves(sets["smollm2-135m_embedded_no-residual"], tmp_path / "nores")
    assert drawn["nores"] == [[[0.0, 50.0], [3.0, 18.0], [8.0, 15.0]]]


def test_two_records_for_one_point_are_an_error_naming_both(tmp_path):
    a, b = record("attn", 8, 45.0, key="a"), record("attn", 8, 40.0, key="b")
    a.source, b.source = tmp_path / "a.json", tmp_path / "b.json"
    with pytest.raises(TableError, match=r"a\.json.*b\.json"):
        plots.figure_sets([a, b])


def test_method_sub_configs_name_a_figure_in_one_file_name_safe_word():
    healed, budgeted = record("attn", 8, 45.0, key="healed"), record("joint", 6, 40.0, key="budget")
    healed.method.extra = {"heal": {"enabled": True, "target_modules": ["q_proj", "o_proj"], "rank": 8}}
    budgeted.method.extra = {"budget": {"kind": "speedup", "target": 1.1}}
    names = [fs.name for fs in plots.figure_sets([healed, budgeted, record("attn", 4, 48.0)])]
    assert names == [
        "smollm2-135m_embedded",
        "smollm2-135m_embedded_budget-speedup-1.1",
        "smollm2-135m_embedded_heal",
    ]


def test_another_eval_limit_is_another_figure_with_its_own_baseline():
    full = record("attn", 8, 45.0, key="full")
    quick = record("attn", 8, 30.0, key="quick", config={"eval": {"limit": 20}})
    base = record("none", 0, 50.0, key="base")
    sets = plots.figure_sets([full, quick, base])
    assert len(sets) == 2 and sets[0].name != sets[1].name
    by_run = {fs.runs[0].key: fs for fs in sets}
    assert by_run["full"].baseline.key == "base" and by_run["quick"].baseline is None
    assert by_run["full"].name == "smollm2-135m_embedded"  # the fields that differ name the other, no hash
    assert by_run["quick"].name == "smollm2-135m_embedded_eval.limit-20"
    assert "limit 20" in by_run["quick"].title


def test_figure_titles_name_the_model_dtype_eval_setting_and_timing_job():
    speed = {"batch_size": 4, "prompt_len": 128, "new_tokens": 16, "dtype": "bfloat16", "repeats": 12}
    config = {"model": {"dtype": "bfloat16"}, "speed": speed}
    run = record("attn", 8, 45.0, key="r", config=config)
    run.versions = {"device": "cpu"}
    (fs,) = plots.figure_sets([run])
    assert fs.title == (
        "smollm2-135m bfloat16, eval embedded\ntiming: cpu bfloat16, B=4 x (128 + 16) tokens, 12 repeats"
    )


def test_speed_bars_draw_each_interval_and_the_csv_keeps_it(tmp_path):
    run = record("attn", 8, 45.0, key="r")
    run.speed = Speed(
        speedup={"generate": Interval(1.2, 1.1, 1.3)}, ideal_speedup=1.25, exceeds_ideal=False, kv_ratio=0.7
    )
    (fs,) = plots.figure_sets([run, record("none", 0, 50.0)])
    plots.speed_bars(fs, tmp_path / "speed")
    data = pd.read_csv(tmp_path / "speed.csv")
    assert not data["exceeds ideal"].any()
    assert data[
        ["key", "speedup", "speedup low", "speedup high", "ideal speedup", "KV ratio"]
    ].values.tolist() == [["r", 1.2, 1.1, 1.3, 1.25, 0.7]]


def test_redundancy_across_training_plots_each_checkpoint_and_refuses_mixed_models(tmp_path):
    for i, meta in enumerate(({"random_init": True}, {"revision": "step-1000"}, {})):
        scores = Scores(
            attn=[0.3, 0.1 / (i + 1)], mlp=[0.9, 0.1], block=[0.9, 0.2], meta={"model": "m"} | meta
        )
        scores.save(tmp_path / f"{i}.json")
    written = figures.training(str(tmp_path / "*.json"), tmp_path / "figs")
    assert sorted(p.name for p in written) == [
        "redundancy_training_m.csv",
        "redundancy_training_m.pdf",
        "redundancy_training_m.png",
    ]
    data = pd.read_csv(tmp_path / "figs" / "redundancy_training_m.csv")
    attn = data[(data.kind == "attn") & (data.layer == 1)].set_index("checkpoint").score
    assert attn.to_dict() == pytest.approx(
        {"random init": 0.1, "step-1000": 0.05, "trained (final)": 0.1 / 3}
    )
    Scores(attn=[0.1], mlp=[0.1], block=[0.1], meta={"model": "other"}).save(tmp_path / "other.json")
    with pytest.raises(SystemExit, match="one model only"):
        figures.training(str(tmp_path / "*.json"), tmp_path / "figs")


def test_one_heatmap_per_scoring_setting_and_disagreeing_scores_are_an_error():
    cosine = record("attn", 3, 48.0, key="cos", scores=SCORES)
    no_residual = record("attn", 3, 20.0, key="nores", scores=SCORES)  # drops by the same cosine scores
    no_residual.method.remove_residual = True
    shuffled = {k: v[::-1] for k, v in SCORES.items()}
    random = record("attn", 3, 30.0, key="rand", criterion="random", scores=shuffled)
    iterative = record("attn", 3, 47.0, key="iter", mode="iterative", scores=shuffled)  # re-scored: not drawn
    runs = plots.heatmap_runs([cosine, no_residual, random, iterative])
    assert [(stem, r.key) for stem, _, r in runs] == [
        ("heatmap_smollm2-135m", "cos"),
        ("heatmap_smollm2-135m_random", "rand"),
    ]
    assert "run cos" in runs[0][1]
    bf16 = record("attn", 3, 48.0, key="bf", scores=shuffled, config={"model": {"dtype": "bfloat16"}})
    ((_, title, _),) = plots.heatmap_runs([bf16])
    assert title.startswith("smollm2-135m bfloat16: cosine importance") and "run bf" in title
    with pytest.raises(ValueError, match="two sets of scores"):
        plots.heatmap_runs([cosine, record("attn", 8, 40.0, key="other", scores=shuffled)])


def test_heatmap_app_titles_name_the_model_criterion_data_and_scores_file(tmp_path):
    meta = {"model": "m", "criterion": "magnitude", "data": "lee", "num_samples": 16, "seq_len": 2048}
    Scores(attn=[0.3, 0.1], mlp=[0.9, 0.1], block=[0.9, 0.2], meta=meta).save(
        tmp_path / "run1" / "scores.json"
    )
    written = figures.heatmaps(str(tmp_path / "run1" / "scores.json"), tmp_path)
    assert [p.name for p in written] == ["heatmap_m.png", "heatmap_m.pdf"]
    title = figures.title(Scores.load(tmp_path / "run1" / "scores.json"), tmp_path / "run1" / "scores.json")
    assert title == f"m: magnitude importance, data lee 16 x 2048 ({tmp_path / 'run1' / 'scores.json'})"


def test_drop_curves_draw_the_paired_95_interval_and_a_kl_panel_with_its_interval(tmp_path, monkeypatch):
    base = with_docs(record("none", 0, 0.0, experiment=None, key="base"), [1, 1, 0, 0, 1, 0])
    run = with_docs(record("attn", 4, 0.0, key="a4"), [1, 0, 0, 1, 1, 0])
    base.fidelity = {"kl": {"value": 0.0, "low": 0.0, "high": 0.0}}
    run.fidelity = {"kl": {"value": 0.2, "low": 0.15, "high": 0.3}}
    unpaired = record("attn", 8, 40.0, key="a8", wall_s=61.5)  # no per-doc values: a plain difference, no bar
    (fs,) = plots.figure_sets([base, run, unpaired])
    delta, se, _ = paired_difference(base.eval, run.eval)
    bars, kl_bars, save = [], [], plots.save_figure

    def keep(fig, stem, data):
        for axis, out in ((fig.axes[0], bars), (fig.axes[1], kl_bars)):
            out.extend(seg.tolist() for c in axis.containers for seg in c.lines[2][0].get_segments())
        return save(fig, stem, data)

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.drop_curves(fs, tmp_path / "curves")
    half = 1.96 * se  # one bar: the paired point's 95% interval
    assert len(bars) == 1 and [y for _, y in bars[0]] == pytest.approx(
        [run.eval.avg - half, run.eval.avg + half]
    )
    # KL: the baseline's degenerate bar at 0 and the run's asymmetric bootstrap interval (x dodged by target)
    assert [seg[0][1] for seg in kl_bars] == pytest.approx([0.0, 0.15])
    assert [seg[1][1] for seg in kl_bars] == pytest.approx([0.0, 0.3])
    data = pd.read_csv(tmp_path / "curves.csv").set_index("key")
    assert data.at["a4", "ΔAvg"] == pytest.approx(delta)
    assert data.at["a4", "ΔAvg paired SE"] == pytest.approx(se)
    assert se > 0 and data.at["a8", "ΔAvg"] == pytest.approx(40.0 - base.eval.avg)
    assert pd.isna(data.at["a8", "ΔAvg paired SE"]) and pd.isna(data.at["base", "ΔAvg"])
    assert data.at["a8", "wall s"] == 61.5 and pd.isna(data.at["a4", "wall s"])  # from the record, or none


def test_one_shot_vs_iterative_csv_pairs_each_iterative_run_with_its_one_shot_run(tmp_path):
    base = with_docs(record("none", 0, 0.0, experiment=None, key="base"), [1, 1, 0, 0, 1, 0])
    one_shot = with_docs(record("attn", 4, 0.0, key="os"), [1, 1, 0, 1, 1, 0])
    iterative = with_docs(record("attn", 4, 0.0, key="it", mode="iterative"), [1, 0, 0, 1, 1, 1])
    (fs,) = plots.figure_sets([base, one_shot, iterative], swept=("mode",))
    delta, se, _ = paired_difference(one_shot.eval, iterative.eval)
    plots.one_shot_vs_iterative(fs, tmp_path / "both")
    data = pd.read_csv(tmp_path / "both.csv")
    row = data[data.key == "it"].iloc[0]
    assert row["Δ vs one-shot"] == pytest.approx(delta) and row["Δ vs one-shot paired SE"] == pytest.approx(
        se
    )
    assert delta == pytest.approx(0.0) and se > 0  # one doc lost, one gained: no net change, a real spread
    assert data[data.key != "it"][["Δ vs one-shot", "Δ vs one-shot paired SE"]].isna().all().all()


def _with_chance(rec, chance: float):
    rec.eval.tasks["wm_cloze"].chance = chance
    return rec


def test_drop_curves_colour_and_offset_each_targets_bars_and_draw_the_suites_chance(tmp_path, saved_axes):
    base = with_docs(record("none", 0, 0.0, experiment=None, key="base"), [1, 1, 0, 0, 1, 0])
    attn = with_docs(record("attn", 4, 0.0, key="a4"), [1, 0, 0, 1, 1, 0])
    mlp = with_docs(record("mlp", 4, 0.0, key="m4"), [1, 0, 0, 0, 1, 0])
    for r in (base, attn, mlp):
        _with_chance(r, 25.0)
    (fs,) = plots.figure_sets([base, attn, mlp])
    plots.drop_curves(fs, tmp_path / "curves")
    ax = saved_axes["curves"]
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["chance (25.0)"].get_ydata()) == [25.0, 25.0]
    assert lines["attn"].get_xydata().tolist() == [[-0.06, 50.0], [3.94, 50.0]]  # offset left of n
    assert lines["mlp"].get_xydata().tolist() == [[0.06, 50.0], [4.06, pytest.approx(100 / 3)]]
    bars = {c.get_label(): c.lines[2][0] for c in ax.containers}
    colours = [tuple(b.get_colors()[0]) for b in bars.values()]
    assert len(bars) == 2 and colours[0] != colours[1]  # each target's bar in its own line's colour
    assert tuple(lines["attn"].get_color()) in [c[:3] for c in colours]
    assert pd.read_csv(tmp_path / "curves.csv")["chance Avg"].tolist() == [25.0] * 4


def test_one_shot_vs_iterative_draws_the_paired_difference_to_the_one_shot_run(tmp_path, saved_axes):
    base = with_docs(record("none", 0, 0.0, experiment=None, key="base"), [1, 1, 0, 0, 1, 0])
    one_shot = with_docs(record("attn", 4, 0.0, key="os"), [1, 1, 0, 1, 1, 0])
    iterative = with_docs(record("attn", 4, 0.0, key="it", mode="iterative"), [1, 0, 0, 0, 1, 1])
    (fs,) = plots.figure_sets([base, one_shot, iterative], swept=("mode",))
    delta, se, _ = paired_difference(one_shot.eval, iterative.eval)
    plots.one_shot_vs_iterative(fs, tmp_path / "both")
    ax = saved_axes["both"]
    (curve,) = [line for line in ax.lines if line.get_label() == "attn"]  # one line: iterative - one-shot
    assert curve.get_xydata().tolist() == [[4.0, pytest.approx(delta)]] and delta < 0
    ((bar,),) = [c.lines[2][0].get_segments() for c in ax.containers]
    assert bar.ravel().tolist() == pytest.approx([4.0, delta - se, 4.0, delta + se])


def test_sdr_plot_uses_symlog_so_an_outlier_leaves_every_point_readable(tmp_path, saved_axes):
    runs = [record("none", 0, 50.0, key="base")]
    for n, sdr, speedup in ((2, 26.6, 1.01), (4, 0.03, 1.05), (8, -0.09, 1.12)):
        r = record("mlp", n, 45.0, key=f"m{n}", sdr={"value": sdr, "low": sdr - 0.01, "high": sdr + 0.01})
        r.speed = Speed(speedup={"generate": Interval(speedup, speedup - 0.01, speedup + 0.01)})
        runs.append(r)
    (fs,) = plots.figure_sets(runs)
    plots.sdr_vs_speedup(fs, tmp_path / "sdr")
    ax = saved_axes["sdr"]
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == pytest.approx(0.03)
    (points,) = [c.lines[0] for c in ax.containers]
    assert points.get_xydata().ravel().tolist() == pytest.approx([1.01, 26.6, 1.05, 0.03, 1.12, -0.09])
    assert sorted(t.get_text() for t in ax.texts) == ["MLP-2", "MLP-4", "MLP-8"]


def test_heatmaps_of_two_scoring_dtypes_are_named_by_the_dtype_not_a_hash():
    config = {"model": {"dtype": "bfloat16"}}
    bf16 = record("attn", 3, 48.0, key="bf", scores=SCORES, config=config)
    fp32 = record("attn", 3, 48.0, key="fp", scores=SCORES, config={"model": {"dtype": "float32"}})
    stems = sorted(stem for stem, _, _ in plots.heatmap_runs([bf16, fp32]))
    assert stems == ["heatmap_smollm2-135m_model.dtype-bfloat16", "heatmap_smollm2-135m_model.dtype-float32"]
