"""What Matters in Transformers? Measure, drop and evaluate redundant modules of decoder-only LLMs.

The package is layered; a folder imports only from the folders above it in this list (and this root):

- `whatmatters` (this root): models, family adapters, paper-model shapes, calibration data, the paper's
  numbers, file helpers.
- `method/`: importance scores and criteria, plans, surgery, one-shot / iterative drop, quantization,
  healing, analyses.
- `eval/`: accuracy through lm-eval's task logic (suites, offline tasks, doc samples, the prefix-sharing LM).
- `records/`: the typed run record, the results store, statistics (no torch).
- `measure/`: timing, the clock inside `generate`, memory and KV cache, budgets, the speedup record.
- `report/`: tables, table files, figures, the speed-accuracy plot (no torch).
- `apps/`: one module per entry point (`experiments/*.py` call them) plus config validation, run keys
  and tracking.

Nothing is imported here, so `import whatmatters.records` or `whatmatters.report` loads no torch. To load a
saved pruned model with `AutoModelForCausalLM.from_pretrained`, `import whatmatters.method.surgery` first.
"""
