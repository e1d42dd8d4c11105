"""The run folder: what a run writes and may delete (entries, markers, checkpoints' names), the report,
plots and the model card.

May import: core, metrics, data, models, tasks, recipe
"""
