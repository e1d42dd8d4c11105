"""Model folders: resolving aliases, hub ids and paths, loading tokenizers and models safely, GGUF weights,
tiny stand-in models, from-scratch configs and tokenizer training, adaptation (LoRA/QLoRA, merging), students
of fewer layers and distillation teachers (the ``distill:`` section, the teacher checked and loaded),
reading back the folders `llmkit export` writes (ONNX, PyTorch int8), and a causal LM wrapped as a zero-shot
classifier (verbaliser log-likelihoods as logits).

May import: core, metrics, data
"""
