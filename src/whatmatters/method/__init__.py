"""The paper's method on a stock transformers model: importance scores (`scores`, `criteria`, `loss_scores`,
`stream_cache`, the torch-free `score_data`), plans (`plans`, torch-free), surgery that really removes a
module (`surgery`), one-shot and iterative drop (`drop`), and the steps around it (`quant`, `heal`), plus the
analyses of why attention is redundant (`analysis`, `stability`). Modules are imported one by one: this file
imports nothing, so the torch-free ones stay torch-free."""
