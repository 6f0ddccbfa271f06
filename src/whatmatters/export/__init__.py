"""Export a pruned model in formats serving engines run: `gguf_export` (llama.cpp), `nemotron` (the Hugging
Face `nemotron-nas` folder vLLM, SGLang and TensorRT-LLM load), the per-layer rules both share (`layers`) and
a small llama.cpp runner (`llamacpp`, needs the `serve` extra). Imports nothing, like every folder's face."""
