"""Model folders: resolving aliases, hub ids and paths, loading tokenizers and models safely, GGUF weights,
tiny stand-in models, from-scratch configs and tokenizer training, adaptation (LoRA/QLoRA, merging), and
reading back the folders `llmkit export` writes (ONNX, PyTorch int8).

May import: core, metrics, data
"""
