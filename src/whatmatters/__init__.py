"""What Matters in Transformers? Measure, drop and evaluate redundant modules of decoder-only LLMs."""

from whatmatters.surgery import register_auto_classes

# So that AutoModelForCausalLM.from_pretrained loads models pruned by `surgery.apply_plan` (no remote code).
register_auto_classes()
