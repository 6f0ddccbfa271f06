"""Accuracy with lm-eval: the proxy smoke suite on tiny models, its reproducible build, and clear errors."""

from __future__ import annotations

import functools
import math
import time
import urllib.error
import urllib.request
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from omegaconf import OmegaConf
from transformers import PreTrainedTokenizerFast

from conftest import tiny_model
from whatmatters.eval import evaluate as ev
from whatmatters.eval import loading
from whatmatters.eval.tasks import TASKS_DIR
from whatmatters.eval.tasks import build as suite_build
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import apply_plan

EVAL_CONF = Path(__file__).parents[1] / "conf" / "eval"


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per ASCII character (the tiny models' 128 ids), so every text gets distinct tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({chr(i): i for i in range(128)}, unk_token="\x00"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="\x03", pad_token="\x03")


@pytest.fixture(scope="module")
def tiny_scores() -> dict[str, list[dict]]:
    """The embedded suite (4 items a task) on a tiny Llama, twice, and once more after dropping attention."""
    tok = char_tokenizer()
    original = [ev.evaluate(tiny_model("llama"), tok, "embedded", limit=4, batch_size=4) for _ in range(2)]
    pruned = apply_plan(tiny_model("llama"), Plan(4, attn=(1, 2, 3)))
    return {"original": original, "pruned": [ev.evaluate(pruned, tok, "embedded", limit=4, batch_size=4)]}


def test_embedded_suite_gives_finite_scores_for_every_task(tiny_scores):
    scores = tiny_scores["original"][0]
    tasks = scores.tasks
    for name in ev.SUITES["embedded"]:
        assert tasks[name].metric == ev.TASKS[name].metric
        assert math.isfinite(tasks[name].value)
    assert 0 <= tasks["wm_cloze"].value <= 100 and tasks["wm_ppl"].value > 1
    # The average covers the accuracy tasks only; perplexity stays out of it.
    assert scores.avg == pytest.approx((tasks["wm_cloze"].value + tasks["wm_nextsent"].value) / 2)


def test_embedded_suite_is_deterministic(tiny_scores):
    first, second = tiny_scores["original"]
    assert first == second


def test_pruned_model_scores_differently(tiny_scores):
    original, pruned = tiny_scores["original"][0], tiny_scores["pruned"][0]
    assert pruned.tasks["wm_ppl"].value != original.tasks["wm_ppl"].value


def test_build_is_deterministic_and_matches_the_committed_jsonl(tmp_path, monkeypatch):
    # Parse the Wikipedia dump once: this checks the builder's sampling, not gensim's parser.
    monkeypatch.setattr(suite_build, "wiki_pages", functools.cache(suite_build.wiki_pages))
    first, second = suite_build.build(tmp_path / "a"), suite_build.build(tmp_path / "b")
    for task, path in first.items():
        assert path.read_bytes() == second[task].read_bytes(), task
        assert path.read_bytes() == (TASKS_DIR / path.name).read_bytes(), (
            f"{path.name} differs from the committed file: run python experiments/build_eval_suite.py"
        )
    assert sum(p.stat().st_size for p in first.values()) < 2_000_000


def test_unknown_task_and_suite_names_fail_before_any_evaluation():
    with pytest.raises(ev.EvalError, match=r"unknown task\(s\) \['no_such_task'\].*lm-eval ls tasks"):
        ev.evaluate(None, None, ["wm_cloze", "no_such_task"])
    with pytest.raises(ev.EvalError, match="unknown eval suite 'nope'; choose one of embedded, paper"):
        ev.check_suite({"suite": "nope"})


def test_registered_task_missing_from_lm_eval_is_rejected_by_the_task_manager(monkeypatch):
    monkeypatch.setitem(ev.TASKS, "wm_missing", ev.TaskSpec("wm_missing", 0, "acc"))
    monkeypatch.setattr(loading, "require_hub", lambda: None)  # pretend to be online: no request is made
    expected = r"no task named \['wm_missing'\].*lm-eval ls tasks --include_path"
    with pytest.raises(ev.EvalError, match=expected):
        ev.check_suite({"suite": ["wm_missing"]})


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF offline mode with an empty cache; the libraries read these settings at import, so patch them too."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_hub_source_offline_fails_fast_and_clearly(offline):
    start = time.perf_counter()
    with pytest.raises(ev.EvalError, match="eval.source=hub needs network access or a local HF datasets"):
        ev.check_suite({"suite": "paper", "source": "hub"})
    assert time.perf_counter() - start < 60  # the task index (~7 s) and one failed dataset lookup


def test_hub_source_with_the_hub_out_of_reach_fails_before_indexing_tasks(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    start = time.perf_counter()
    with pytest.raises(ev.EvalError, match="use eval.source=offline.*HF_DATASETS_OFFLINE=1"):
        ev.check_suite({"suite": "paper_table2", "source": "hub"})
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("path", sorted(EVAL_CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_eval_config_names_a_registered_suite_and_valid_options(path):
    cfg = OmegaConf.load(path)
    assert ev.task_specs(cfg.suite) and {"source", "limit", "sample", "fewshot", "batch_size"} <= set(cfg)
    ev.check_options(cfg.source, cfg.limit, cfg.sample, cfg.fewshot)
    # The proxies never stand in for the paper's tasks: only the smoke suite runs them.
    assert all(s.proxy for s in ev.task_specs(cfg.suite)) == (path.stem == "embedded")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("cloud", None, None, "sampled"), r"eval.source='cloud' is not valid: use offline .* or hub"),
        (("offline", 0, None, "sampled"), r"eval.limit=0 is not valid: use a whole number >= 1"),
        (("offline", 2.5, None, "sampled"), r"eval.limit=2.5 is not valid"),
        (("offline", None, 0, "sampled"), r"eval.sample=0 is not valid: use a whole number of docs per task"),
        (("offline", 5, 10, "sampled"), r"eval.limit=5 and eval.sample=10 both select docs: set one .* null"),
        (("offline", None, None, "random"), r"eval.fewshot='random' is not valid: use sampled .* or fixed"),
        (("hub", None, None, "fixed"), r"eval.fewshot=fixed .*: set eval.source=offline"),
    ],
)
def test_bad_eval_options_are_rejected_with_the_field_value_and_fix(options, message):
    with pytest.raises(ev.EvalError, match=message):
        ev.check_options(*options)
