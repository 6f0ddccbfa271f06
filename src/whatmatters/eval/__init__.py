"""Accuracy on the paper's benchmarks through lm-eval's own task logic: task specs and suites (`suites`,
no lm-eval), task loading offline or from the hub (`loading`), the seeded doc sample (`doc_sample`), the
typed result (`result`, no torch), the exact prefix-sharing scorer (`fastlm`, `prefix_tree`) and
`evaluate` on top."""
