"""Using a trained model: `predict`, `evaluate` (and its report), `explain`, `export`, and the demos
(`generate`, `answer`, `fill-mask`, `summarize`, `translate`).

May import: core, metrics, data, models, tasks, recipe, runs, training
"""
