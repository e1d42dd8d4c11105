"""Using a trained model: `predict`, `evaluate` (and its report), `explain`, `export`, and the demos
(`generate`, `answer`, `fill-mask`, `summarize`, `translate`); `audit`, the data audit whose label-noise step
embeds the rows with a model.

May import: core, metrics, data, models, tasks, recipe, runs, training
"""
