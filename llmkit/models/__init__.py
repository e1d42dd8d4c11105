"""Model folders: resolving aliases, hub ids and paths, loading tokenizers and models safely, GGUF weights,
tiny stand-in models, from-scratch configs and tokenizer training, and adaptation (LoRA/QLoRA, merging).

May import: core, metrics, data
"""
