"""What a drop buys, measured: the generation job (`job`), timing with alternated repeats (`timing`), the
clock inside `generate` (`clock`), memory and KV cache (`memory`), plans to a budget (`budget`) and the
speedup record of an original / pruned pair (`speed`)."""
