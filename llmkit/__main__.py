"""`python -m llmkit` is the same as the `llmkit` command (also under accelerate/torchrun `-m`)."""

from llmkit.cli import main

main()
